"""/api/chat, /api/chat/stream and /api/chat/batch: the keypool-native chat routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import body_doc, read_model, validate
from app.api.cached import answer
from app.api.calls import chat_call, tier_of, user_id_of
from app.api.deps import runtime_of
from app.api.observe import noting
from app.api.responses import json_response, stream_headers
from app.api.sse import keypool_sse, stream_answer
from app.chat.batch import run_batch
from app.chat.fallback import KeySpread
from app.chat.service import ChatCall, ChatResult
from app.errors import InvalidRequest
from app.schemas import BatchRequest, ChatRequest

router = APIRouter(prefix="/api/chat", tags=["chat"])

_BODY_DOC = body_doc(ChatRequest)


@router.post("", openapi_extra=_BODY_DOC)
async def chat(request: Request) -> Response:
    """One chat completion: Path A without `model`, Path B with it."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    call = chat_call(body, user_id_of(request, body.user_id), tier_of(request))
    render = noting(request, ChatResult.as_dict)  # the request log line: path, model, attempts
    done = await answer(service, runtime.cache, call, "chat", render)
    return json_response(done.body, headers=done.headers())


@router.post("/stream", openapi_extra=_BODY_DOC)
async def chat_stream(request: Request) -> Response:
    """SSE stream; answers only after a key produced its first token (errors before are JSON)."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    call = chat_call(body, user_id_of(request, body.user_id), tier_of(request))
    opening = service.open_stream(call)
    return await stream_answer(request, opening, keypool_sse, stream_headers, call.user_id)


@router.post("/batch")
async def chat_batch(request: Request) -> Response:
    """1 to 16 chat requests run at once, each on a different key where enough are usable."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    envelope = await read_model(request, BatchRequest, settings.max_message_chars)
    items = [batch_item(item, request, settings.max_message_chars) for item in envelope.requests]

    async def complete(call: ChatCall, spread: KeySpread) -> dict[str, Any]:
        done = await answer(service, runtime.cache, call, "chat", ChatResult.as_dict, spread=spread)
        return done.body

    return json_response({"results": await run_batch(service, items, complete)})


def batch_item(item: object, request: Request, max_chars: int) -> ChatCall | InvalidRequest:
    """An invalid item becomes that item's own `invalid_request` error, not the batch's."""
    try:
        body = validate(ChatRequest, item, max_chars)
        return chat_call(body, user_id_of(request, body.user_id), tier_of(request))
    except InvalidRequest as exc:
        return exc
