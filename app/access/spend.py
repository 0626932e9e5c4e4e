"""SpendSink: every settled attempt priced, and booked to its user's day and its key's total.

It wraps the usage sink (as `metrics.MeteredSink` does) so it sees each attempt exactly once,
when `Settlement` settles it. Everything here is memory: the user's day goes to the budget
ledger and the batched `user_daily_usage` writer, the key's cost rides on the event into the
batched `api_key_stats` writer. No I/O on the request path.
"""

from __future__ import annotations

from dataclasses import replace

from app.access.service import Access
from app.usage import UsageEvent, UsageSink


class SpendSink:
    """Prices attempts that produced tokens; failed attempts and token-less ones pass as is.

    A user-attributed answer (`user_id` set) adds one request, its tokens and its cost to that
    user's day, in every AUTH_MODE (in `none` mode without a budget to count against).
    """

    def __init__(self, inner: UsageSink, access: Access) -> None:
        self.inner = inner
        self.access = access

    def record(self, event: UsageEvent) -> None:
        if (
            event.error
            or event.model is None
            or not (event.prompt_tokens or event.completion_tokens)
        ):
            self.inner.record(event)
            return
        access, user = self.access, event.user_id
        cost = access.record(
            user,
            event.provider,
            event.model,
            event.prompt_tokens,
            event.completion_tokens,
            budget_usd=access.spend_budget(user) if user is not None else None,
        )
        self.inner.record(replace(event, cost_usd=cost) if cost else event)
