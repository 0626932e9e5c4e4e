"""Where run-time keys sit: fingerprints by position, and how positions move on a delete."""

from __future__ import annotations

from datetime import UTC, datetime

from app.config import ApiKey
from app.vault.layout import VaultKey, identities, moved_from, positioned, tail_of

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def vault_key(key_id: int, secret: str) -> VaultKey:
    return VaultKey(key_id, "groq", None, tail_of(secret), ApiKey(secret, ""), NOW)


class TestLayout:
    def test_tail_is_the_last_four_characters_of_a_real_length_key(self):
        assert tail_of("sk-0123456789abcdefWXYZ") == "WXYZ"
        assert len(tail_of("short")) == 6
        assert "short"[-4:] != tail_of("short")

    def test_vault_keys_are_numbered_after_the_environment_keys(self):
        keys = positioned(
            "groq",
            2,
            [vault_key(7, "sk-aaaaaaaaaaaaaaaa1111"), vault_key(9, "sk-bbbbbbbbbbbbbbbb2222")],
        )
        assert [k.fingerprint for k in keys] == ["groq:2:1111", "groq:3:2222"]

    def test_deleting_a_vault_key_moves_the_later_ones_down_by_one(self):
        old = identities(2, [7, 8, 9])
        new = identities(2, [7, 9])
        assert moved_from(old, new) == (0, 1, 2, 4)

    def test_an_added_key_is_new_and_the_others_stay(self):
        assert moved_from(identities(1, [7]), identities(1, [7, 8])) == (0, 1, None)
