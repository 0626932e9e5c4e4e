"""Provider clients built once at start-up: one per (provider, key index) for the default model."""

from __future__ import annotations

from collections.abc import Sequence

from app.config import ProviderConfig
from app.providers.client import ProviderClient
from app.providers.transport import Transport


class ClientCache:
    """Path A reuses these; Path B derives a per-model client that shares the same connection pool."""

    def __init__(self, providers: Sequence[ProviderConfig], transport: Transport) -> None:
        self._transport = transport
        self._clients = {
            (p.name, i): ProviderClient(p, i, transport, p.default_model)
            for p in providers
            for i in range(len(p.keys))
        }

    def get(self, provider: str, index: int, model: str) -> ProviderClient:
        return self._clients[(provider, index)].with_model(model)

    def rebuild(self, config: ProviderConfig) -> None:
        """A provider's key list changed (key vault): its clients follow it, index by index."""
        clients = {k: c for k, c in self._clients.items() if k[0] != config.name}
        for i in range(len(config.keys)):
            clients[(config.name, i)] = ProviderClient(
                config, i, self._transport, config.default_model
            )
        self._clients = clients
