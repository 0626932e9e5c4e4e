"""Serving the vault's keys: the merged key lists at start, and each change as it happens.

At start the pools are built from `merged(providers)` (environment keys, then vault keys in
creation order). Afterwards every change the vault sees (a write on this instance, or a
refresh that found another instance's write) reaches `apply` with the provider's new list and
the layout that moves per-key state with its key; a change to a user's own keys drops that
user's private pool, rebuilt from the new keys at their next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from app.config import ApiKey, ProviderConfig
from app.state.base import KeyLayout
from app.vault.keys import VaultKeys

logger = logging.getLogger("keypool.vault")

Apply = Callable[[ProviderConfig, KeyLayout], None]


def record_fields(env_count: int, vault_ids: Sequence[int]) -> tuple[str, ...]:
    """Stable record names: environment keys by index (as ever), vault keys by row id."""
    return tuple(str(i) for i in range(env_count)) + tuple(f"v{i}" for i in vault_ids)


class VaultServing:
    def __init__(
        self,
        vault: VaultKeys,
        apply: Apply,
        forget_own: Callable[[str, str], None] | None = None,
    ) -> None:
        self.vault = vault
        self.apply = apply
        self.forget_own = forget_own

    def merged(self, providers: Sequence[ProviderConfig]) -> list[ProviderConfig]:
        return [self.vault.with_vault_keys(p) for p in providers]

    def layout(self, provider: str, moved_from: Sequence[int | None]) -> KeyLayout:
        config = self.vault.with_vault_keys(self.vault.providers[provider])
        ids = [k.id for k in self.vault.vault_keys(provider)]
        env = len(self.vault.providers[provider].keys)
        return KeyLayout(tuple(moved_from), record_fields(env, ids), config.key_weights)

    def start(self) -> None:
        """Name every provider's records (no key moves) and listen to the vault from now on."""
        for name, env in self.vault.providers.items():
            size = len(env.keys) + len(self.vault.vault_keys(name))
            self.apply(self.vault.with_vault_keys(env), self.layout(name, range(size)))
        self.vault.on_change = self.on_change
        self.vault.on_byok_change = self.on_byok_change

    def on_change(
        self, provider: str, keys: tuple[ApiKey, ...], moved_from: tuple[int | None, ...]
    ) -> None:
        config = self.vault.with_vault_keys(self.vault.providers[provider])
        self.apply(config, self.layout(provider, moved_from))
        logger.info(
            "%s now serves %d keys (%d from the vault)",
            provider,
            len(keys),
            len(self.vault.vault_keys(provider)),
        )

    def on_byok_change(self, user_id: str, provider: str, _keys: tuple[ApiKey, ...]) -> None:
        if self.forget_own is not None:
            self.forget_own(user_id, provider)
