"""Resolve a request to its path: Path A (providers' default models) or Path B (one named model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from app.config import ProviderConfig
from app.errors import UnknownModel, UnknownProvider


@dataclass(frozen=True, slots=True)
class Route:
    path: Literal["A", "B"]
    providers: tuple[ProviderConfig, ...]
    model: str | None = None

    def model_for(self, provider: ProviderConfig) -> str:
        return self.model or provider.default_model


def resolve_route(
    providers: Sequence[ProviderConfig], model: str | None, provider: str | None
) -> Route:
    """DESIGN.md §3: explicit provider, then a `prefix/` naming a provider, then whoever lists it."""
    by_name = {p.name: p for p in providers}
    chosen = None
    if provider is not None:
        chosen = by_name.get(provider.lower())
        if chosen is None:
            raise UnknownProvider(
                f"provider {provider!r} is not configured",
                details={"provider": provider, "available": sorted(by_name)},
            )
    if model is None:
        return Route("A", (chosen,) if chosen else tuple(providers))
    if chosen is not None:
        return Route("B", (chosen,), model)
    prefix, _, rest = model.partition("/")
    if rest and prefix.lower() in by_name:
        return Route("B", (by_name[prefix.lower()],), rest)
    for candidate in providers:
        if candidate.serves(model):
            return Route("B", (candidate,), model)
    raise UnknownModel(
        f"no configured provider serves model {model!r}; name a provider, prefix the model "
        f"with one (e.g. '{providers[0].name}/{model}') or list it in <PROVIDER>_MODELS",
        details={"model": model},
    )
