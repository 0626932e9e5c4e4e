"""Checking a key before it is stored: one cheap authenticated `GET /models` at its provider.

Verdicts: 2xx → valid; 429 → valid (the key authenticated, it is only busy); 401/403 → invalid
(422 invalid_key); anything else (5xx, 404, a timeout, a refused connection) → no verdict, and the
key is not stored (502 upstream_unreachable; the admin may retry, or pass `"validate": false`).
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from app.config import ApiKey, ProviderConfig
from app.providers.client import ProviderClient
from app.providers.errors import UpstreamError
from app.providers.transport import Transport
from app.vault.errors import InvalidKey, KeyCheckFailed
from app.vault.layout import tail_of


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    UNKNOWN = "unknown"


def classify(status: int | None) -> Verdict:
    if status is not None and (200 <= status < 300 or status == 429):
        return Verdict.VALID
    if status in (401, 403):
        return Verdict.INVALID
    return Verdict.UNKNOWN


async def probe_status(provider: ProviderConfig, secret: str, transport: Transport) -> int | None:
    """The status of the provider's probe call with this key; None when no answer came."""
    candidate = ApiKey(secret, f"{provider.name}:new:{tail_of(secret)}")
    client = ProviderClient(
        replace(provider, keys=(candidate,)), 0, transport, provider.default_model
    )
    try:
        return await client.probe()
    except UpstreamError:
        return None


async def require_valid_key(provider: ProviderConfig, secret: str, transport: Transport) -> None:
    """Raise InvalidKey or KeyCheckFailed unless the provider accepts the key."""
    status = await probe_status(provider, secret, transport)
    verdict = classify(status)
    details = {"provider": provider.name, "status": status}
    if verdict is Verdict.INVALID:
        raise InvalidKey(f"{provider.name} refused the key (HTTP {status})", details=details)
    if verdict is Verdict.UNKNOWN:
        reason = f"HTTP {status}" if status is not None else "no answer"
        raise KeyCheckFailed(
            f"could not check the key with {provider.name} ({reason}); nothing was stored",
            details=details,
        )
