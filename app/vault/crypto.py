"""AES-256-GCM sealing of provider keys: a fresh nonce per row, the row's identity as associated data.

The associated data binds a ciphertext to its provider, its fingerprint and (for bring-your-own-key
rows) its user, so a row copied onto another provider or user fails to open instead of quietly
serving someone else's key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.config import decode_master_key

NONCE_BYTES = 12
_AAD_VERSION = b"keypool-vault/1"


@dataclass(frozen=True, slots=True)
class Sealed:
    nonce: bytes
    ciphertext: bytes  # includes GCM's 16-byte tag


class CannotDecrypt(Exception):
    """This master key does not open the row (wrong key, or the row was altered)."""


def associated_data(provider: str, fingerprint: str, user_id: str | None = None) -> bytes:
    parts = [_AAD_VERSION, provider.encode(), fingerprint.encode(), (user_id or "").encode()]
    # Length-prefixed, so no choice of values can make two different rows' data equal.
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


class VaultCipher:
    """The master key in use; its repr never shows the key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)  # raises ValueError unless 16/24/32 bytes; we only pass 32

    @classmethod
    def from_base64(cls, text: str) -> VaultCipher:
        return cls(decode_master_key(text))

    def __repr__(self) -> str:
        return "VaultCipher(***)"

    def seal(
        self, secret: str, provider: str, fingerprint: str, user_id: str | None = None
    ) -> Sealed:
        nonce = os.urandom(NONCE_BYTES)
        aad = associated_data(provider, fingerprint, user_id)
        return Sealed(nonce, self._aead.encrypt(nonce, secret.encode(), aad))

    def open(
        self, sealed: Sealed, provider: str, fingerprint: str, user_id: str | None = None
    ) -> str:
        aad = associated_data(provider, fingerprint, user_id)
        try:
            return self._aead.decrypt(sealed.nonce, sealed.ciphertext, aad).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise CannotDecrypt("the master key does not open this row") from None
