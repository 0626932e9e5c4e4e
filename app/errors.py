"""Client-facing error tree; one handler renders every member as DESIGN.md's JSON envelope.

    KeypoolError                 (status, type, message, details)
    ├── InvalidRequest           422 invalid_request
    ├── PayloadTooLarge          413 payload_too_large
    ├── UnknownProvider          400 unknown_provider
    ├── UnknownModel             400 unknown_model
    ├── UpstreamBadRequest       400 upstream_bad_request   (upstream 400, never retried)
    ├── ModelNotFound            404 model_not_found        (upstream 404, never retried)
    ├── Unauthorized             401 unauthorized
    ├── AdminDisabled            403 admin_disabled
    ├── UnknownKey               404 unknown_key
    ├── UnknownUser              404 unknown_user
    ├── RateLimited              429 rate_limited           (+ Retry-After)
    ├── AllProvidersFailed       503 all_providers_failed   (Path A exhausted)
    ├── AllKeysFailed            503 all_keys_failed        (Path B exhausted)
    └── NotReady                 503 not_ready

Messages never contain key material: upstream failures are described by provider, key index
and a short reason only.
"""

from __future__ import annotations

import math
from typing import Any


class KeypoolError(Exception):
    """Base of every error a client may see; carries its HTTP status and envelope fields."""

    status_code = 500
    type = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message, **self.details}}


class InvalidRequest(KeypoolError):
    """The request body or parameters failed validation."""

    status_code = 422
    type = "invalid_request"


class PayloadTooLarge(KeypoolError):
    """The request body is over the accepted size."""

    status_code = 413
    type = "payload_too_large"


class UnknownProvider(KeypoolError):
    """The request names a provider that is not configured."""

    status_code = 400
    type = "unknown_provider"


class UnknownModel(KeypoolError):
    """No configured provider serves the requested model."""

    status_code = 400
    type = "unknown_model"


class UpstreamBadRequest(KeypoolError):
    """The upstream rejected the request itself; another key would reject it too."""

    status_code = 400
    type = "upstream_bad_request"


class ModelNotFound(KeypoolError):
    """The upstream does not know the requested model."""

    status_code = 404
    type = "model_not_found"


class Unauthorized(KeypoolError):
    """Missing or wrong admin token."""

    status_code = 401
    type = "unauthorized"


class AdminDisabled(KeypoolError):
    """The admin API is off because no ADMIN_TOKEN is configured."""

    status_code = 403
    type = "admin_disabled"


class UnknownKey(KeypoolError):
    """An admin route named a provider or key index that does not exist."""

    status_code = 404
    type = "unknown_key"


class MetricsDisabled(KeypoolError):
    """GET /metrics while METRICS_ENABLED=false (nothing is recorded to serve)."""

    status_code = 404
    type = "not_found"


class UnknownUser(KeypoolError):
    """An admin route named a user that was never seen."""

    status_code = 404
    type = "unknown_user"


class RateLimited(KeypoolError):
    """Every key that could serve the request is rate limited."""

    status_code = 429
    type = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, details: dict[str, Any]) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            message,
            details={**details, "retry_after": seconds},
            headers={"Retry-After": str(seconds)},
        )
        self.retry_after_s = retry_after_s


class AllProvidersFailed(KeypoolError):
    """Path A tried every eligible provider and key without an answer."""

    status_code = 503
    type = "all_providers_failed"


class AllKeysFailed(KeypoolError):
    """Path B tried every key of the model's provider without an answer."""

    status_code = 503
    type = "all_keys_failed"


class NotReady(KeypoolError):
    """The gateway is starting up or draining."""

    status_code = 503
    type = "not_ready"


class DatabaseUnavailable(KeypoolError):
    """The database is down; chat keeps working, this admin operation cannot."""

    status_code = 503
    type = "database_unavailable"
