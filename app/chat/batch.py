"""Fan-out: up to 16 chat requests at once, each on a different key where the pool has enough.

The requests of a batch share a `KeySpread`: each acquire prefers the keys its siblings have
used least, so with enough usable keys every request gets its own, and with fewer they rotate.
Each request keeps its own fallback, errors and deadline; one failing never fails the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.chat.fallback import KeySpread
from app.chat.service import ChatCall, ChatService
from app.errors import KeypoolError

logger = logging.getLogger("keypool.batch")

# One item's answer body (the route passes its response-cache path); default: the service's.
Complete = Callable[[ChatCall, KeySpread], Awaitable[dict[str, Any]]]


async def run_batch(
    service: ChatService,
    items: Sequence[ChatCall | KeypoolError],
    complete: Complete | None = None,
) -> list[dict[str, Any]]:
    """One result per item, in order; an item that is already an error is reported as such."""
    spread = KeySpread()

    async def plain(call: ChatCall, spread: KeySpread) -> dict[str, Any]:
        return (await service.complete(call, spread=spread)).as_dict()

    one = complete or plain
    return list(await asyncio.gather(*(_one(one, item, spread) for item in items)))


async def _one(
    complete: Complete, item: ChatCall | KeypoolError, spread: KeySpread
) -> dict[str, Any]:
    if isinstance(item, KeypoolError):
        return failed(item)
    try:
        response = await complete(item, spread)
    except KeypoolError as exc:
        return failed(exc)
    except Exception as exc:  # isolation: a bug in one request must not take its siblings down
        logger.error("batch item failed unexpectedly: %s", type(exc).__name__)
        return failed(KeypoolError("internal error; this request was not completed"))
    return {"ok": True, "response": response}


def failed(error: KeypoolError) -> dict[str, Any]:
    return {"ok": False, "error": error.body()["error"]}
