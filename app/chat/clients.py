"""Provider clients built once at start-up: one per (provider, key index) for the default model."""

from __future__ import annotations

from collections.abc import Sequence

from app.config import ProviderConfig
from app.providers.client import ProviderClient
from app.providers.transport import Transport


class ClientCache:
    """Path A reuses these; Path B derives a per-model client that shares the same connection pool."""

    def __init__(self, providers: Sequence[ProviderConfig], transport: Transport) -> None:
        self._clients = {
            (p.name, i): ProviderClient(p, i, transport, p.default_model)
            for p in providers
            for i in range(len(p.keys))
        }

    def get(self, provider: str, index: int, model: str) -> ProviderClient:
        return self._clients[(provider, index)].with_model(model)
