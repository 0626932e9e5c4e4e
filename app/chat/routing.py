"""Resolve a request to its path: Path A (providers' default models) or Path B (one named model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from app.config import ProviderConfig
from app.errors import UnknownModel, UnknownProvider
from app.model_groups import ModelGroup


@dataclass(frozen=True, slots=True)
class Route:
    path: Literal["A", "B"]
    providers: tuple[ProviderConfig, ...]
    model: str | None = None
    # A model group: Path B across its members' providers, each with its own model.
    group: str | None = None
    models: tuple[tuple[str, str], ...] = ()

    def model_for(self, provider: ProviderConfig) -> str:
        for name, model in self.models:
            if name == provider.name:
                return model
        return self.model or provider.default_model

    @property
    def spans_providers(self) -> bool:
        """Path A and groups fall over from provider to provider (and rotate them)."""
        return self.path == "A" or self.group is not None


def group_route(
    group: ModelGroup, by_name: Mapping[str, ProviderConfig], only: str | None = None
) -> Route:
    """Members in configured order (only the member of provider `only` when one is named);
    `model` names the group in errors."""
    members = [
        (by_name[m.provider], m.model)
        for m in group.members
        if m.provider in by_name and (only is None or m.provider == only.lower())
    ]
    return Route(
        "B",
        tuple(p for p, _ in members),
        group.name,
        group=group.name,
        models=tuple((p.name, model) for p, model in members),
    )


def resolve_route(
    providers: Sequence[ProviderConfig],
    model: str | None,
    provider: str | None,
    groups: Mapping[str, ModelGroup] | None = None,
) -> Route:
    """A model group's name first (with `provider`, only that member; a non-member provider
    gets the name as a plain model); then DESIGN.md §3: explicit provider, a `prefix/` naming
    a provider, whoever lists the model."""
    by_name = {p.name: p for p in providers}
    if model is not None and groups and model in groups:
        route = group_route(groups[model], by_name, provider)
        if route.providers:
            return route
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
