"""Upstream failures as typed errors, mapped once at the provider boundary.

    UpstreamError                      (outcome, status, signal, reason)
    ├── UpstreamHTTPError              a non-2xx answer
    │   ├── UpstreamRateLimited        429
    │   ├── UpstreamQuotaExceeded      429 whose body says the quota is out (not a rate limit)
    │   ├── UpstreamAuthFailed         401, 402, 403
    │   ├── UpstreamRejected           400, 413, 422
    │   ├── UpstreamNotFound           404
    │   └── UpstreamServerError        5xx and anything else unexpected
    ├── UpstreamConnectionError        refused, reset, disconnected
    │   └── UpstreamTimeout            no answer (or no next chunk) in time
    └── UpstreamStreamError            the stream broke or carried an error event

No message here ever contains the key: only status, provider and a short reason.
"""

from __future__ import annotations

import orjson

from app.keys.model import NO_SIGNAL, Outcome, RateLimitSignal


class UpstreamError(Exception):
    outcome = Outcome.SERVER_ERROR

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        signal: RateLimitSignal = NO_SIGNAL,
        upstream_message: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.signal = signal
        self.upstream_message = upstream_message


class UpstreamHTTPError(UpstreamError):
    """The upstream answered with a non-2xx status."""


class UpstreamRateLimited(UpstreamHTTPError):
    """429: the key is out of budget until its reset."""

    outcome = Outcome.RATE_LIMITED


class UpstreamQuotaExceeded(UpstreamHTTPError):
    """429 with OpenAI's `insufficient_quota`: no reset is coming, so the key is failed, not cooled."""

    outcome = Outcome.QUOTA_EXCEEDED


class UpstreamAuthFailed(UpstreamHTTPError):
    """401/402/403: the key is invalid, revoked or out of credit."""

    outcome = Outcome.AUTH_FAILED


class UpstreamRejected(UpstreamHTTPError):
    """400-class rejection of the request itself; every key would get the same."""

    outcome = Outcome.BAD_REQUEST


class UpstreamNotFound(UpstreamHTTPError):
    """404: the model (or endpoint) does not exist upstream."""

    outcome = Outcome.NOT_FOUND


class UpstreamServerError(UpstreamHTTPError):
    """5xx or an unexpected status: try another key."""

    outcome = Outcome.SERVER_ERROR


class UpstreamConnectionError(UpstreamError):
    """The connection failed or dropped before a complete answer."""

    outcome = Outcome.CONNECTION_ERROR


class UpstreamTimeout(UpstreamConnectionError):
    """No answer, or no next stream chunk, within the provider's timeout."""

    outcome = Outcome.TIMEOUT


class UpstreamStreamError(UpstreamError):
    """The upstream stream was malformed or reported an error in-band."""

    outcome = Outcome.SERVER_ERROR


_STATUS_CLASSES: dict[int, type[UpstreamHTTPError]] = {
    400: UpstreamRejected,
    401: UpstreamAuthFailed,
    402: UpstreamAuthFailed,
    403: UpstreamAuthFailed,
    404: UpstreamNotFound,
    413: UpstreamRejected,
    422: UpstreamRejected,
    429: UpstreamRateLimited,
}


QUOTA_CODES = frozenset({"insufficient_quota"})
QUOTA_TEXT = "exceeded your current quota"


def quota_exhausted(body: bytes) -> bool:
    """Whether an error body says the account is out of quota rather than briefly rate limited:
    OpenAI's `insufficient_quota` (as `code` or `type`) or its "exceeded your current quota"."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return QUOTA_TEXT in body.decode("utf-8", "replace").lower()
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return False
    if error.get("code") in QUOTA_CODES or error.get("type") in QUOTA_CODES:
        return True
    message = error.get("message")
    return isinstance(message, str) and QUOTA_TEXT in message.lower()


def error_for_status(
    status: int, signal: RateLimitSignal, upstream_message: str | None, *, quota: bool = False
) -> UpstreamHTTPError:
    """The openai-python status table: one class per status family; a 429 with `quota` (see
    `quota_exhausted`) is a key out of quota."""
    kind = _STATUS_CLASSES.get(status, UpstreamServerError)
    if status == 429 and quota:
        kind = UpstreamQuotaExceeded
    return kind(
        f"upstream {status}", status=status, signal=signal, upstream_message=upstream_message
    )
