"""Users' own keys as private pools: each (user, provider) gets its own KeyPool and clients.

A private pool has the full KeyStateStore interface (an in-process `MemoryStateStore` holding one
pool), so the chat runner can serve a bring-your-own-key request exactly like a shared one, only
against `ByokPool.store` and `ByokPool.clients`: its cooldowns, failures and breaker are the
user's alone, and the shared pool never sees the key. State is per process (not in Redis): a
user's own key carries one user's traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from app.config import ApiKey, ProviderConfig
from app.keys.breaker import CircuitBreaker
from app.keys.pacing import Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.providers.client import ProviderClient
from app.providers.transport import Transport
from app.state.memory import MemoryStateStore

PoolFactory = Callable[[ProviderConfig], KeyPool]


def default_pool(config: ProviderConfig) -> KeyPool:
    return KeyPool(
        len(config.keys),
        make_strategy("round_robin"),
        pace=Pace(config.rpm_per_key, config.tpm_per_key, burst=config.burst_per_key),
        breaker=CircuitBreaker(),
    )


@dataclass(frozen=True, slots=True)
class ByokPool:
    """One user's keys for one provider: `config.keys` are theirs, fingerprinted `<p>:byok:<last4>`."""

    user_id: str
    config: ProviderConfig
    store: MemoryStateStore
    clients: tuple[ProviderClient, ...]

    def client(self, index: int, model: str) -> ProviderClient:
        return self.clients[index].with_model(model)


class ByokPools:
    """Private pools built on first use; `forget` (the vault's `on_byok_change`) drops a stale one."""

    def __init__(
        self,
        providers: dict[str, ProviderConfig],
        keys_of: Callable[[str, str], tuple[ApiKey, ...]],
        transport: Transport,
        make_pool: PoolFactory = default_pool,
    ) -> None:
        self.providers = providers
        self.keys_of = keys_of
        self.transport = transport
        self.make_pool = make_pool
        self._pools: dict[tuple[str, str], ByokPool] = {}

    def get(self, user_id: str | None, provider: str) -> ByokPool | None:
        """The user's private pool for this provider; None: no own key, use the shared pool."""
        if user_id is None:
            return None
        pool = self._pools.get((user_id, provider))
        if pool is not None:
            return pool
        keys = self.keys_of(user_id, provider)
        base = self.providers.get(provider)
        if not keys or base is None:
            return None
        config = replace(base, keys=keys, key_weights=(1.0,) * len(keys))
        store = MemoryStateStore({provider: self.make_pool(config)})
        clients = tuple(
            ProviderClient(config, i, self.transport, config.default_model)
            for i in range(len(keys))
        )
        pool = ByokPool(user_id, config, store, clients)
        self._pools[(user_id, provider)] = pool
        return pool

    def forget(self, user_id: str, provider: str, _keys: tuple[ApiKey, ...] = ()) -> None:
        """Drop the pool: the next request builds it from the user's current keys."""
        self._pools.pop((user_id, provider), None)
