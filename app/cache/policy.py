"""Which requests the cache may answer (CACHE_MODE and the per-request `"cache"` flag)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class CacheResult(StrEnum):
    """The `x-keypool-cache` header value and the metrics label."""

    HIT = "hit"
    MISS = "miss"
    BYPASS = "bypass"


def should_cache(mode: str, params: Mapping[str, Any], explicit: bool | None) -> bool:
    """off: never. `"cache": false`: never. all: always. deterministic: temperature 0 or
    `"cache": true`. Streaming requests are never cached; the caller does not ask for them."""
    if mode == "off" or explicit is False:
        return False
    if mode == "all" or explicit is True:
        return True
    temperature = params.get("temperature")
    return temperature is not None and temperature == 0
