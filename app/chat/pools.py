"""Which keys serve one provider for one user: the shared pool, or the user's own keys (BYOK).

The fallback loop asks `PoolResolver.resolve(provider, user_id)` before each acquire and gets a
`KeyPoolView` (config, state store, clients): the shared pool's current layout, or, for a user
with their own key for that provider, that user's private pool, which nobody else is served
from and which never falls back to the shared keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from app.chat.clients import ClientCache
from app.chat.directory import ProviderDirectory
from app.config import ProviderConfig
from app.providers.client import ProviderClient
from app.state.base import KeyStateStore

BYOK = "byok"  # how errors, attempts and answers name a user's own key


@dataclass(frozen=True, slots=True)
class KeyPoolView:
    """One provider's keys as one request sees them; indices point into `config.keys`."""

    config: ProviderConfig
    store: KeyStateStore
    clients: Callable[[int, str], ProviderClient]
    generation: int = 0
    byok: bool = False

    def client(self, index: int, model: str) -> ProviderClient:
        return self.clients(index, model)

    def label(self, index: int) -> int | str:
        """The key as answers and errors name it: its index, or "byok"."""
        return BYOK if self.byok else index


class PoolResolver(Protocol):
    def resolve(self, provider: str, user_id: str | None) -> KeyPoolView: ...

    def follow(self, view: KeyPoolView, index: int) -> tuple[KeyPoolView, int] | None:
        """The same key in the current layout (None: it was removed meanwhile)."""
        ...


class SharedPools:
    """The shared pool only (no vault, or a script): every user gets the same keys."""

    def __init__(
        self, directory: ProviderDirectory, store: KeyStateStore, clients: ClientCache
    ) -> None:
        self.directory = directory
        self.store = store
        self.clients = clients

    def resolve(self, provider: str, user_id: str | None) -> KeyPoolView:
        return self.view(provider)

    def view(self, provider: str) -> KeyPoolView:
        clients = self.clients

        def client(index: int, model: str) -> ProviderClient:
            return clients.get(provider, index, model)

        return KeyPoolView(
            self.directory.get(provider), self.store, client, self.directory.generation(provider)
        )

    def follow(self, view: KeyPoolView, index: int) -> tuple[KeyPoolView, int] | None:
        if view.byok:
            return view, index  # a private pool is rebuilt, never renumbered
        name = view.config.name
        if view.generation == self.directory.generation(name):
            return view, index
        moved = self.directory.follow(name, index, view.generation)
        return None if moved is None else (self.view(name), moved)


class OwnPool(Protocol):
    """A user's private pool for one provider (`app.vault.byok.ByokPool` is one)."""

    @property
    def config(self) -> ProviderConfig: ...

    @property
    def store(self) -> KeyStateStore: ...

    def client(self, index: int, model: str) -> ProviderClient: ...


class OwnPools(Protocol):
    def get(self, user_id: str | None, provider: str) -> OwnPool | None: ...


class WithOwnKeys(SharedPools):
    """The shared pool, except for a user's own keys: those serve that user's requests alone."""

    def __init__(
        self,
        directory: ProviderDirectory,
        store: KeyStateStore,
        clients: ClientCache,
        own: OwnPools,
    ) -> None:
        super().__init__(directory, store, clients)
        self.own = own

    def resolve(self, provider: str, user_id: str | None) -> KeyPoolView:
        pool = self.own.get(user_id, provider) if user_id is not None else None
        if pool is None:
            return self.view(provider)
        return KeyPoolView(pool.config, pool.store, pool.client, byok=True)
