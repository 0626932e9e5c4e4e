"""Parsing of the scheduling settings: MODEL_GROUPS, TIER_WEIGHTS and `<P>_SHARED_LIMIT`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

SharedLimit = Literal["auto", "true", "false"]
SHARED_LIMIT_VALUES: tuple[SharedLimit, ...] = ("auto", "true", "false")
DEFAULT_TIER_WEIGHTS = "free:1,pro:2,enterprise:4"
RESERVED_NAMES = frozenset({"auto"})  # /v1's Path A model


class GroupConfigError(ValueError):
    """A scheduling setting that cannot be used; `config.ConfigError` re-raises it as is."""


@dataclass(frozen=True, slots=True)
class GroupMember:
    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """One public model name served, in order, by models of several providers."""

    name: str
    members: tuple[GroupMember, ...]


def parse_model_groups(raw: str | None, providers: Collection[str]) -> dict[str, ModelGroup]:
    """`name=prov/model,prov/model;name2=…` → groups by name, checked against `providers`.

    A provider may appear once per group: the fallback loop tracks tried keys per provider,
    so a second model of the same provider would find every key already tried.
    """
    groups: dict[str, ModelGroup] = {}
    for entry in (part.strip() for part in (raw or "").split(";")):
        if not entry:
            continue
        name, sep, members_raw = (s.strip() for s in entry.partition("="))
        if not sep or not name:
            raise GroupConfigError(f"MODEL_GROUPS: expected name=provider/model,… in {entry!r}")
        if name.lower() in RESERVED_NAMES or name in groups:
            raise GroupConfigError(f"MODEL_GROUPS: group name {name!r} is reserved or repeated")
        groups[name] = ModelGroup(name, _members(name, members_raw, providers))
    return groups


def _members(name: str, raw: str, providers: Collection[str]) -> tuple[GroupMember, ...]:
    members: list[GroupMember] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        provider, _, model = (s.strip() for s in item.partition("/"))
        if not provider or not model:
            raise GroupConfigError(
                f"MODEL_GROUPS: member {item!r} of group {name!r} is not provider/model"
            )
        provider = provider.lower()
        if provider not in providers:
            raise GroupConfigError(
                f"MODEL_GROUPS: group {name!r} names provider {provider!r}, which is not "
                f"configured (configured: {', '.join(sorted(providers)) or 'none'})"
            )
        if any(m.provider == provider for m in members):
            raise GroupConfigError(
                f"MODEL_GROUPS: group {name!r} names provider {provider!r} twice"
            )
        members.append(GroupMember(provider, model))
    if not members:
        raise GroupConfigError(f"MODEL_GROUPS: group {name!r} has no members")
    return tuple(members)


def parse_tier_weights(raw: str) -> dict[str, float]:
    """`free:1,pro:2` → {"free": 1.0, "pro": 2.0}; every weight must be positive."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        tier, sep, value = (s.strip() for s in item.partition(":"))
        try:
            weight = float(value) if sep and tier else 0.0
        except ValueError:
            weight = 0.0
        if weight <= 0 or weight != weight or weight == float("inf"):
            raise GroupConfigError(f"TIER_WEIGHTS: expected tier:positive_number, got {item!r}")
        weights[tier.lower()] = weight
    if not weights:
        raise GroupConfigError("TIER_WEIGHTS: expected tier:weight pairs, e.g. free:1,pro:2")
    return weights


def parse_shared_limit(env: Mapping[str, str], prefix: str) -> SharedLimit:
    raw = env.get(f"{prefix}_SHARED_LIMIT", "").strip().lower() or "auto"
    for value in SHARED_LIMIT_VALUES:
        if raw == value:
            return value
    raise GroupConfigError(f"{prefix}_SHARED_LIMIT must be auto, true or false, got {raw!r}")
