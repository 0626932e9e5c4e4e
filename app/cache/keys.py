"""Cache keys: sha256 over canonical JSON of everything that changes the answer, and its scope.

Never part of a key: credentials (they travel in headers, not in `params`), the user's identity
except as the scope, and fields that do not change the answer (`IGNORED_PARAMS`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

import orjson

# Request fields that never change the upstream's answer, or are the cache's own switches.
IGNORED_PARAMS = frozenset({"stream", "stream_options", "user", "cache", "fallback"})
_KEY_VERSION = 1

ANONYMOUS_SCOPE = "anonymous"
GLOBAL_SCOPE = "global"


def cache_scope(setting: Literal["user", "global"], user_id: str | None, byok: bool = False) -> str:
    """Whose answers may be shared: per user (anonymous requests share one scope) or everyone's.

    A bring-your-own-key request is always scoped to its user: the answer came from their key.
    """
    if byok or setting == "user":
        return f"user:{user_id}" if user_id else ANONYMOUS_SCOPE
    return GLOBAL_SCOPE


def cache_key(
    *,
    family: str,
    route: str,
    provider: str,
    model: str,
    params: Mapping[str, Any],
    scope: str,
) -> str:
    """The key of one request.

    `family`: the route family ("chat" for /api/chat and batch items, "openai" for /v1), since
    their bodies differ. `route`/`provider`/`model`: the resolved routing (Path B: "B", the
    provider and upstream model; Path A: "A", the provider restriction or "*", and "*": any
    provider's answer serves a Path A request). `params`: the upstream body (messages, sampling
    parameters, tools, response_format, ...), minus `IGNORED_PARAMS`.
    """
    payload = {
        "v": _KEY_VERSION,
        "family": family,
        "route": route,
        "provider": provider,
        "model": model,
        "scope": scope,
        "params": {k: v for k, v in params.items() if k not in IGNORED_PARAMS},
    }
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(canonical).hexdigest()
