"""Client keys: format, randomness, hashing and the in-memory index."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from app.access.clientkeys import ClientKeyIndex, generate_key, hash_key, key_prefix
from app.db.access import ClientKey

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def entry(secret: str, key_id: int = 1, user: str = "alice") -> ClientKey:
    return ClientKey(
        key_id, hash_key(secret), key_prefix(secret), user, None, None, None, None, NOW
    )


def test_keys_start_with_kp_and_carry_at_least_128_random_bits():
    key = generate_key()
    assert key.startswith("kp-")
    raw = base64.urlsafe_b64decode(key[3:] + "=" * (-len(key[3:]) % 4))
    assert len(raw) * 8 >= 128
    assert len({generate_key() for _ in range(1000)}) == 1000


def test_only_the_hash_and_an_8_char_prefix_are_kept():
    key = generate_key()
    stored = entry(key)
    assert stored.key_prefix == key[:8]
    assert key not in repr(stored)
    assert len(stored.key_hash) == 64


def test_index_finds_live_keys_and_forgets_revoked_ones():
    key, other = generate_key(), generate_key()
    index = ClientKeyIndex([entry(key, 1), entry(other, 2, "bob")])

    found = index.find(key)
    assert found is not None
    assert found.user_id == "alice"
    assert index.find(key + "x") is None
    assert index.find("not-a-key") is None

    index.put(entry(key, 1).revoked(NOW))
    assert index.find(key) is None
    assert index.find(other) is not None


def test_revoked_keys_are_not_loaded():
    key = generate_key()
    assert ClientKeyIndex([entry(key).revoked(NOW)]).find(key) is None


def test_a_key_found_before_is_refused_at_once_after_revoking_or_a_reload_without_it():
    key, other = generate_key(), generate_key()
    index = ClientKeyIndex([entry(key, 1), entry(other, 2, "bob")])
    assert index.find(key) is not None
    assert index.find(key) is not None  # the second lookup takes the remembered string
    assert index.find(other) is not None

    index.replace_all([entry(other, 2, "bob")])  # a reload from a database without `key`
    assert index.find(key) is None
    assert index.find(other) is not None

    index.put(entry(other, 2, "bob").revoked(NOW))
    assert index.find(other) is None
