"""MAX_STREAMS_PER_USER: how many streams (SSE, /v1 stream, websocket requests) one user may hold.

Counted per process, in memory (microseconds, no I/O); requests without a user id are not
counted (nothing identifies them). Over the cap → 429 `too_many_streams`, nothing opened.
"""

from __future__ import annotations

from app.errors import KeypoolError


class TooManyStreams(KeypoolError):
    """A user already holds MAX_STREAMS_PER_USER open streams."""

    status_code = 429
    type = "too_many_streams"


class UserStreams:
    """Open-stream counts per user id; `limit` None means no cap (and no counting)."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, user_id: str | None) -> None:
        """Count one more stream for `user_id`, or raise TooManyStreams; pair with `release`."""
        if self.limit is None or user_id is None:
            return
        held = self._open.get(user_id, 0)
        if held >= self.limit:
            raise TooManyStreams(
                f"user already has {held} streams open (limit {self.limit}); close one first"
            )
        self._open[user_id] = held + 1

    def release(self, user_id: str | None) -> None:
        if self.limit is None or user_id is None:
            return
        held = self._open.get(user_id, 0) - 1
        if held > 0:
            self._open[user_id] = held
        else:
            self._open.pop(user_id, None)  # idle users cost no memory

    def open_for(self, user_id: str) -> int:
        return self._open.get(user_id, 0)
