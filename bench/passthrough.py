"""The floor for any gateway: forward /v1/chat/completions with a round-robin key, nothing else.

Run: PASSTHROUGH_UPSTREAM=http://127.0.0.1:PORT/v1 PASSTHROUGH_KEYS=k1,k2 \
     uvicorn bench.passthrough:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:8001/v1").rstrip("/")
KEYS = itertools.cycle(os.environ.get("PASSTHROUGH_KEYS", "k1").split(","))
state: dict[str, aiohttp.ClientSession] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    state["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await state["s"].close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    body = await request.body()
    headers = {"Authorization": f"Bearer {next(KEYS)}", "Content-Type": "application/json"}
    upstream = await state["s"].post(f"{UPSTREAM}/chat/completions", data=body, headers=headers)
    if not orjson.loads(body).get("stream"):
        async with upstream:
            data = await upstream.read()
        return Response(data, upstream.status, media_type=upstream.content_type)

    async def relay() -> AsyncIterator[bytes]:
        async with upstream:
            async for chunk in upstream.content.iter_any():
                yield chunk

    return StreamingResponse(relay(), upstream.status, media_type="text/event-stream")
