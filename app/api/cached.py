"""Non-streaming chat answers through the response cache, with their cost and cache headers.

The one path /api/chat, batch items and /v1 (without `stream`) take: decide whether the cache
applies (CACHE_MODE, the body's `"cache"`), key the request by route family, resolved route,
upstream parameters and scope, then answer from the cache (no key, no upstream call, cost 0)
or from the pool, keeping a successful answer. Errors raise before anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import HTTPConnection

from app.api.responses import keypool_headers
from app.cache.policy import CacheResult
from app.cache.service import ResponseCache
from app.chat.fallback import KeySpread
from app.chat.routing import Route
from app.chat.service import ChatCall, ChatResult, ChatService
from app.vault.keys import VaultKeys

Family = Literal["chat", "openai"]
Render = Callable[[ChatResult], dict[str, Any]]

COST_HEADER = "x-keypool-cost-usd"
CACHE_HEADER = "x-keypool-cache"


def cost_text(cost_usd: float) -> str:
    """The header's form: plain decimal, no exponent (`0.0000123`)."""
    return f"{cost_usd:.10f}".rstrip("0").rstrip(".") or "0"


@dataclass(frozen=True, slots=True)
class Answer:
    body: dict[str, Any]
    provider: str
    key_index: int
    cost_usd: float
    cache: CacheResult

    def headers(self) -> dict[str, str]:
        return {
            **keypool_headers(self.provider, self.key_index),
            COST_HEADER: cost_text(self.cost_usd),
            CACHE_HEADER: self.cache.value,
        }


async def answer(
    service: ChatService,
    cache: ResponseCache | None,
    connection: HTTPConnection,
    call: ChatCall,
    family: Family,
    render: Render,
    *,
    spread: KeySpread | None = None,
) -> Answer:
    if cache is None or not cache.applies(call.params, call.cache):
        if cache is not None:
            cache.bypass()
        return _fresh(await service.complete(call, spread=spread), render, CacheResult.BYPASS)
    route = service.route(call)
    key = cache.key(
        family=family,
        route=route.path,
        provider="*" if route.path == "A" and call.provider is None else _names(route),
        model=route.group or route.model or "*",
        params=call.params,
        user_id=call.user_id,
        byok=_own_key(connection, call.user_id, route),
    )
    stored = await cache.lookup(key)
    if stored is not None:
        body: dict[str, Any] = stored["body"]
        if "cost_usd" in body:
            body["cost_usd"] = 0.0
        return Answer(body, stored["provider"], stored["key_index"], 0.0, CacheResult.HIT)
    fresh = _fresh(await service.complete(call, spread=spread), render, CacheResult.MISS)
    cache.remember(
        key, {"body": fresh.body, "provider": fresh.provider, "key_index": fresh.key_index}
    )
    return fresh


def _fresh(result: ChatResult, render: Render, cache: CacheResult) -> Answer:
    return Answer(render(result), result.provider, result.key_index, result.cost_usd, cache)


def _names(route: Route) -> str:
    return ",".join(p.name for p in route.providers)


def _own_key(connection: HTTPConnection, user_id: str | None, route: Route) -> bool:
    """Whether the user has their own key for a provider of this route (then user-scoped)."""
    if user_id is None:
        return False
    vault: VaultKeys | None = connection.scope.get("state", {}).get("vault")
    return vault is not None and any(vault.byok(user_id, p.name) for p in route.providers)
