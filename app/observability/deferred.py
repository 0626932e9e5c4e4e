"""Observability work moved off the request and run in batches.

Recording one request (two Prometheus families, the rolling summary, the JSON log line) costs a
few microseconds in a tight loop but three to four times that inline, where each request runs
its whole handler between two recordings and finds the recording code and data cold. Measured
in process at concurrency 32: ~100 us of CPU per request inline, a fraction of that batched.
So a request only appends a call to a list; the calls run together on the next batch, at most
DELAY_S later (or at once past MAX_PENDING calls), and before anything reads what they record
(`flush()` is called by /metrics, the summary routes and at shutdown), so a reader never sees a
request that was answered but not yet counted.

Batching is only worth it where keypool writes its own log lines (`requestlog.direct()`); under
another logging setup (pytest's capture, an embedding app) each call runs at once, so a log line
is there as soon as the answer is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from app.observability.requestlog import request_log

DELAY_S = 0.1
# A batch runs at once past this many calls (a chat request makes about two: its record and one
# per upstream attempt, plus one when a state read after the attempt has news). Small enough
# that a batch holds only a couple of dozen requests' headers and records (at ~3,000 req/s,
# 100 ms was ~300 held: a working set that pushes the rest of the request out of the CPU
# caches), large enough that the recording code stays warm through
# the batch. Measured on a noisy host (CPU per request over the observability-free build, same
# run): 1,024 +7.0% and +9.9% vs 64 +3.7% and +6.0% in two runs; in a third, 16 +9.2%, 64 +7.1%,
# 256 +5.3%, all within that run's noise (±2-3 points).
MAX_PENDING = 64
logger = logging.getLogger("keypool.observability")


class Deferred:
    """A list of calls and the one timer that runs them."""

    def __init__(
        self,
        delay_s: float = DELAY_S,
        max_pending: int = MAX_PENDING,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.after = after  # run after every batch and every call run at once
        self.max_pending = max_pending
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._running = False
        self._timer: asyncio.TimerHandle | None = None  # the one timer, while it is due
        self.batches = 0  # flushes that ran something (tests: batching happened)

    def call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn(*args)` with the next batch, or now when batching does not apply."""
        pending = self._pending
        if not pending:
            if self._running or not request_log.direct():
                self._now(fn, args)
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a thread, shutdown): nothing would flush it
                self._now(fn, args)
                return
            if self._timer is None:  # a batch that filled up left its timer due: it serves
                self._timer = loop.call_later(self.delay_s, self._due)  # this one, sooner
        # (while a batch runs `_pending` is a fresh empty list: such calls ran inline above)
        pending.append((fn, args))
        if len(pending) >= self.max_pending:
            self.flush()

    def flush(self) -> None:
        """Run every pending call now (idempotent; the timer finds nothing after a read)."""
        pending = self._pending
        if not pending or self._running:
            return
        self._pending = []
        self._running = True  # a call that defers again runs inline, in this batch
        try:
            for fn, args in pending:
                _safely(fn, args)
        finally:
            self._running = False
        if self.after is not None:
            _safely(self.after, ())
        self.batches += 1
        # The batch's log lines wait in the log's own buffer (written per 256 lines or 200 ms
        # after the first): a write per batch of a couple of dozen requests was three times
        # the system calls.

    def _now(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        _safely(fn, args)
        if self.after is not None and not self._running:  # (a running batch calls it at its end)
            _safely(self.after, ())

    def _due(self) -> None:
        self._timer = None
        self.flush()


def _safely(fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    try:
        fn(*args)
    except Exception as exc:  # recording must never fail a request, nor the batch after it
        logger.error("observability record failed: %s", type(exc).__name__)
