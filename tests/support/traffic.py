"""Many concurrent chat requests from one client, for tests that need volume or races."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp

Request = tuple[dict[str, str], dict[str, Any]]  # (headers, JSON body)


async def post_all(
    base_url: str, path: str, requests: Sequence[Request], concurrency: int = 32
) -> list[tuple[int, dict[str, Any]]]:
    """POST every request, at most ``concurrency`` at a time; (status, JSON body) in order.

    aiohttp rather than httpx: the client shares the test process (and its GIL) with the
    gateway and the fake, and httpx's pure-Python client costs several times more CPU.
    """
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:

        async def one(headers: dict[str, str], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with gate, session.post(path, json=body, headers=headers) as answer:
                return answer.status, await answer.json(content_type=None)

        return await asyncio.gather(*(one(h, b) for h, b in requests))
