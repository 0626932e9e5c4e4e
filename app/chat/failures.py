"""Turn the attempts of an exhausted request into the client error DESIGN.md §3 prescribes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.chat.routing import Route
from app.errors import (
    AllKeysFailed,
    AllProvidersFailed,
    KeypoolError,
    ModelNotFound,
    RateLimited,
    UpstreamBadRequest,
)
from app.keys.model import Outcome
from app.providers.errors import UpstreamError

RATE_LIMITED = Outcome.RATE_LIMITED.value


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed try, as listed in `attempts` of the answer (no key material, index only)."""

    provider: str
    key_index: int | str  # "byok": a user's own key
    error: str
    status: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "key_index": self.key_index,
            "error": self.error,
            "status": self.status,
        }


def final_error(exc: UpstreamError, route: Route, provider: str) -> KeypoolError | None:
    """Errors no other key can fix: returned at once instead of burning the pool."""
    if exc.outcome is Outcome.BAD_REQUEST:
        message = exc.upstream_message or "the upstream rejected the request"
        return UpstreamBadRequest(
            f"{provider}: {message}", details={"provider": provider, "status": exc.status}
        )
    # A group member's 404 moves on to the next member, as Path A moves on to the next provider.
    if exc.outcome is Outcome.NOT_FOUND and not route.spans_providers:
        model = route.model
        return ModelNotFound(
            f"provider {provider!r} does not serve model {model!r}",
            details={"provider": provider, "model": model},
        )
    return None


def exhausted_error(
    route: Route,
    attempts: list[Attempt],
    skipped: dict[str, str],
    retry_after_s: float | None,
    untried: Mapping[int, str] | Mapping[str, str] | None = None,
) -> KeypoolError:
    """429 when every failure was a rate limit (with Retry-After), 503 otherwise.

    `untried` (Path B) gives the state of each key no attempt reached, so `errors` covers them all.
    """
    reasons = [a.error for a in attempts] + list(skipped.values())
    tried = [a.as_dict() for a in attempts]
    if route.spans_providers:
        errors: dict[str, str] = dict(skipped)
        for attempt in attempts:
            errors[attempt.provider] = attempt.error
        details: dict[str, Any] = {"errors": errors, "attempts": tried}
        message = "every provider failed; see errors for the reason per provider"
        if route.group is not None:
            details.update(group=route.group, model=route.model)
            message = f"every member of model group {route.group!r} failed; see errors"
    else:
        provider = route.providers[0].name
        pairs: list[tuple[int | str, str]] = [(i, r) for i, r in (untried or {}).items()]
        errors = {str(i): reason for i, reason in sorted(pairs, key=_by_index)}
        errors.update({str(a.key_index): a.error for a in attempts})
        details = {"provider": provider, "model": route.model, "errors": errors, "attempts": tried}
        message = f"every key of provider {provider!r} failed for model {route.model!r}"
    if reasons and all(r == RATE_LIMITED for r in reasons):
        return RateLimited(
            "all keys are rate limited; retry after the indicated delay",
            retry_after_s=retry_after_s if retry_after_s is not None else 1.0,
            details=details,
        )
    if route.spans_providers:
        return AllProvidersFailed(message, details=details)
    return AllKeysFailed(message, details=details)


def _by_index(item: tuple[int | str, str]) -> tuple[int, str]:
    key = item[0]
    return (key, "") if isinstance(key, int) else (-1, key)
