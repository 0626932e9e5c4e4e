"""What the chat layer reports to whoever observes it (the observability hub, built by runtime).

The chat layer does not import observability: `runtime.py` passes the hub in as a
`ChatObserver`. Both calls are synchronous and O(1): they run on the request path.
"""

from __future__ import annotations

from typing import Protocol


class ChatObserver(Protocol):
    def attempt_settled(
        self,
        provider: str,
        fingerprint: str,
        *,
        key_state: str | None = None,
        circuit: str | None = None,
        quota_exceeded: bool = False,
        reason: str | None = None,
    ) -> None:
        """One upstream attempt settled that has something to tell: the states after it when
        they were read, or a key out of quota (its duration reaches metrics with its usage)."""
        ...

    def provider_exhausted(self, provider: str) -> None:
        """A request found no usable key on `provider` (every key failed, disabled or cooling
        with no end in sight)."""
        ...
