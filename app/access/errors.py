"""Access errors, rendered by the usual handlers (and by the middleware) as the JSON envelope."""

from __future__ import annotations

from app.access.ratelimit import whole_seconds
from app.errors import KeypoolError


class ClientUnauthorized(KeypoolError):
    """Missing, unknown or revoked client key (or service token)."""

    status_code = 401
    type = "unauthorized"
    openai_code = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class UserRateLimited(KeypoolError):
    """The user sent more than its requests per minute."""

    status_code = 429
    type = "user_rate_limited"

    def __init__(self, message: str, retry_after_s: float, headers: dict[str, str]) -> None:
        seconds = whole_seconds(retry_after_s)
        super().__init__(
            message,
            details={"retry_after": seconds},
            headers={**headers, "Retry-After": str(seconds)},
        )


class BudgetExceeded(KeypoolError):
    """The user has spent its daily budget; it renews at the next UTC midnight."""

    status_code = 429
    type = "budget_exceeded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        seconds = whole_seconds(retry_after_s)
        super().__init__(
            message, details={"retry_after": seconds}, headers={"Retry-After": str(seconds)}
        )


class UnknownClient(KeypoolError):
    """An admin route named a client key id that does not exist."""

    status_code = 404
    type = "unknown_client"
