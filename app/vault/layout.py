"""Pure rules of where run-time keys sit: fingerprints, positions, and how positions move.

A provider's keys are its environment keys first, then its vault keys in creation order, and a
key's index is its position in that list; deleting a vault key moves the later ones down by one.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime

from app.config import ApiKey, fingerprint


def tail_of(secret: str) -> str:
    """What a fingerprint shows of a key after its position: last 4 chars (a short hash if short)."""
    return fingerprint("", 0, secret).rsplit(":", 1)[1]


def byok_fingerprint(provider: str, tail: str) -> str:
    """Users' own keys have no pool position; their fingerprint says so."""
    return f"{provider}:byok:{tail}"


@dataclass(frozen=True, slots=True)
class VaultKey:
    """One opened vault row. `key.fingerprint` follows its current position (or `byok`)."""

    id: int
    provider: str
    user_id: str | None
    tail: str
    key: ApiKey
    created_at: datetime
    nonce: bytes = b""  # tells a re-encrypted row (new nonce) from the one already opened


def positioned(provider: str, env_count: int, keys: Sequence[VaultKey]) -> tuple[ApiKey, ...]:
    """The vault keys as they sit after `env_count` environment keys, fingerprinted by position."""
    return tuple(
        ApiKey(k.key.secret, f"{provider}:{env_count + n}:{k.tail}") for n, k in enumerate(keys)
    )


def identities(env_count: int, vault_ids: Sequence[int]) -> tuple[Hashable, ...]:
    """A stable identity per position: ("env", i) then ("vault", id)."""
    return tuple(("env", i) for i in range(env_count)) + tuple(("vault", i) for i in vault_ids)


def moved_from(old: Sequence[Hashable], new: Sequence[Hashable]) -> tuple[int | None, ...]:
    """For each new position, the old position of the same key (None: a key new to the list).

    Per-key state (cooldowns, counters, in-flight) must follow this map, not the index.
    """
    where = {identity: position for position, identity in enumerate(old)}
    return tuple(where.get(identity) for identity in new)
