"""Errors of the key vault; the HTTP ones render as the usual JSON envelope.

KeypoolError (app.errors)
├── InvalidKey          422 invalid_key           (the provider refused the key: 401/403)
├── VaultDisabled       409 vault_disabled        (no KEYPOOL_MASTER_KEY)
├── DuplicateKey        409 duplicate_key         (already in the environment or the vault)
├── KeyFromEnvironment  409 key_from_environment  (environment keys are not deleted at run time)
└── KeyCheckFailed      502 upstream_unreachable  (the key could not be checked; not stored)
ConfigError (app.config)
└── WrongMasterKey      a stored row does not decrypt: the start stops with one line
"""

from __future__ import annotations

from app.config import ConfigError
from app.errors import KeypoolError


class InvalidKey(KeypoolError):
    """The provider answered the probe with 401/403: the key does not work there."""

    status_code = 422
    type = "invalid_key"


class VaultDisabled(KeypoolError):
    """Run-time keys need KEYPOOL_MASTER_KEY."""

    status_code = 409
    type = "vault_disabled"


class DuplicateKey(KeypoolError):
    """The same key is already served (from the environment or the vault)."""

    status_code = 409
    type = "duplicate_key"


class KeyFromEnvironment(KeypoolError):
    """Environment keys change only with the environment, not through the admin API."""

    status_code = 409
    type = "key_from_environment"


class KeyCheckFailed(KeypoolError):
    """The probe got no verdict (5xx, 404, timeout, connection error); nothing was stored."""

    status_code = 502
    type = "upstream_unreachable"


class WrongMasterKey(ConfigError):
    """KEYPOOL_MASTER_KEY does not open the stored keys (a different key, or rows tampered with)."""


def wrong_master_key(unreadable: int, total: int) -> WrongMasterKey:
    return WrongMasterKey(
        f"KEYPOOL_MASTER_KEY does not decrypt {unreadable} of {total} stored provider keys: "
        "start with the master key they were stored under "
        "(or re-encrypt them with `keypool vault rotate-master`)"
    )
