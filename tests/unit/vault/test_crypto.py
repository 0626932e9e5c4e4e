"""Sealing provider keys: round trip, a fresh nonce per row, and rows bound to their identity."""

from __future__ import annotations

import base64
import os

import pytest

from app.vault.crypto import CannotDecrypt, Sealed, VaultCipher

SECRET = "sk-live-abcdefghijklmnop1234"


@pytest.fixture
def cipher() -> VaultCipher:
    return VaultCipher(os.urandom(32))


class TestSeal:
    def test_round_trip(self, cipher: VaultCipher):
        sealed = cipher.seal(SECRET, "groq", "1234")
        assert cipher.open(sealed, "groq", "1234") == SECRET

    def test_ciphertext_holds_no_key_text_and_each_row_gets_a_fresh_nonce(
        self, cipher: VaultCipher
    ):
        first, second = cipher.seal(SECRET, "groq", "1234"), cipher.seal(SECRET, "groq", "1234")
        assert len(first.nonce) == 12
        assert first.nonce != second.nonce
        assert first.ciphertext != second.ciphertext
        assert SECRET.encode() not in first.ciphertext

    def test_another_master_key_cannot_open(self, cipher: VaultCipher):
        sealed = cipher.seal(SECRET, "groq", "1234")
        with pytest.raises(CannotDecrypt):
            VaultCipher(os.urandom(32)).open(sealed, "groq", "1234")

    @pytest.mark.parametrize(
        ("provider", "fingerprint", "user"),
        [("openai", "1234", None), ("groq", "9999", None), ("groq", "1234", "alice")],
    )
    def test_a_row_moved_to_another_provider_fingerprint_or_user_does_not_open(
        self, cipher: VaultCipher, provider: str, fingerprint: str, user: str | None
    ):
        sealed = cipher.seal(SECRET, "groq", "1234")
        with pytest.raises(CannotDecrypt):
            cipher.open(sealed, provider, fingerprint, user)

    def test_a_users_key_opens_only_as_that_users(self, cipher: VaultCipher):
        sealed = cipher.seal(SECRET, "groq", "1234", "alice")
        assert cipher.open(sealed, "groq", "1234", "alice") == SECRET
        with pytest.raises(CannotDecrypt):
            cipher.open(sealed, "groq", "1234")  # not into the shared pool

    def test_tampered_ciphertext_does_not_open(self, cipher: VaultCipher):
        sealed = cipher.seal(SECRET, "groq", "1234")
        flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
        with pytest.raises(CannotDecrypt):
            cipher.open(Sealed(sealed.nonce, flipped), "groq", "1234")

    def test_repr_hides_the_master_key(self):
        key = os.urandom(32)
        text = base64.b64encode(key).decode()
        assert text not in repr(VaultCipher.from_base64(text))
