"""Client keys: `kp-` + 256 bits of randomness, stored only as their SHA-256, found by that hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from app.db.access import ClientKey

PREFIX = "kp-"
PREFIX_CHARS = 8  # key_prefix: enough to tell keys apart in a list, far too little to guess


def generate_key() -> str:
    """A new client key; token_urlsafe(32) carries 256 random bits."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_CHARS]


class ClientKeyIndex:
    """hash → usable key, in memory: a first lookup is one SHA-256 and one dict probe.

    A dict probe on a SHA-256 hash leaks nothing useful through timing (the caller cannot
    steer the hash); the final compare_digest keeps the match itself constant-time. A key
    once found is then found by the presented string itself (the hash cost ~4 us a request):
    only keys that matched enter that map, so it holds at most one entry per live key, and
    any change to the index empties it, so a revoked key is refused at once. Probing it with a
    guessed key is a probe on Python's salted string hash, which the caller cannot steer either.
    """

    def __init__(self, keys: Iterable[ClientKey] = ()) -> None:
        self._by_hash: dict[str, ClientKey] = {}
        self._by_presented: dict[str, ClientKey] = {}
        self.replace_all(keys)

    def replace_all(self, keys: Iterable[ClientKey]) -> None:
        self._by_hash = {k.key_hash: k for k in keys if k.revoked_at is None}
        self._by_presented = {}

    def put(self, key: ClientKey) -> None:
        if key.revoked_at is None:
            self._by_hash[key.key_hash] = key
        else:
            self._by_hash.pop(key.key_hash, None)
        self._by_presented = {}

    def find(self, presented: str) -> ClientKey | None:
        known = self._by_presented.get(presented)
        if known is not None:
            return known
        if not presented.startswith(PREFIX):
            return None
        digest = hash_key(presented)
        found = self._by_hash.get(digest)
        if found is None or not hmac.compare_digest(found.key_hash, digest):
            return None
        self._by_presented[presented] = found
        return found

    def __len__(self) -> int:
        return len(self._by_hash)
