"""Log a database outage once when it starts and once when it ends, not per attempt."""

from __future__ import annotations

import logging


class OutageLog:
    """Tracks up/down for one background component and logs only the transitions.

    Why: a writer retrying every second against a dead database would otherwise emit
    thousands of identical warnings and bury the one line that matters.
    """

    def __init__(self, logger: logging.Logger, component: str, target: str) -> None:
        self._logger = logger
        self._component = component
        self._target = target  # already masked: never a URL with its password
        self.healthy = True

    def failed(self, exc: BaseException, kept: str) -> None:
        """Record a failed attempt; warns only on the first one of an outage."""
        if self.healthy:
            self._logger.warning(
                "%s: database %s unavailable (%s: %s); keeping %s in memory and retrying",
                self._component,
                self._target,
                type(exc).__name__,
                _first_line(exc),
                kept,
            )
        self.healthy = False

    def succeeded(self) -> None:
        """Record a successful attempt; logs recovery once."""
        if not self.healthy:
            self._logger.info("%s: database %s is back", self._component, self._target)
        self.healthy = True


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the SQL and its parameters on later lines; keep logs to the cause.
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""
