"""The providers as they are now: environment keys plus the vault's, changing while serving.

Everything that reads a provider's key list (routing, the fallback loop, the prober, the health
view) reads it here, so none keeps a stale copy; every change is one generation of the
provider's layout (`keys.renumber`), which in-flight attempts follow (`Settlement.follow`).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.config import ProviderConfig
from app.keys.renumber import Renumbering


class ProviderDirectory:
    """Current `ProviderConfig` per provider, in configured order. Reads are dict look-ups."""

    def __init__(self, providers: Sequence[ProviderConfig]) -> None:
        self._configs = {p.name: p for p in providers}
        self._all = tuple(providers)
        self.layouts = Renumbering()

    def all(self) -> tuple[ProviderConfig, ...]:
        return self._all

    def get(self, name: str) -> ProviderConfig:
        return self._configs[name]

    def by_name(self) -> dict[str, ProviderConfig]:
        return self._configs

    def generation(self, name: str) -> int:
        return self.layouts.generation(name)

    def replace(self, config: ProviderConfig, moved_from: Sequence[int | None]) -> int:
        """A provider's new key list (`moved_from[i]`: old index of the key now at i)."""
        self._configs = {**self._configs, config.name: config}
        self._all = tuple(self._configs[p.name] for p in self._all)
        return self.layouts.record(config.name, moved_from)

    def follow(self, name: str, index: int, generation: int) -> int | None:
        """An index granted in `generation`, now (None: that key was removed)."""
        return self.layouts.translate(name, index, generation)
