"""/api/chat, /api/chat/stream and /api/chat/batch: the keypool-native chat routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import body_doc, read_model, validate
from app.api.calls import chat_call, user_id_of
from app.api.deps import runtime_of
from app.api.observe import note_answer
from app.api.responses import json_response, keypool_headers, stream_headers
from app.api.sse import keypool_sse, stream_answer
from app.chat.batch import run_batch
from app.chat.service import ChatCall
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
    result = await service.complete(chat_call(body, user_id_of(request, body.user_id)))
    note_answer(request, result)  # the request log line: path, model, attempts
    return json_response(
        result.as_dict(), headers=keypool_headers(result.provider, result.key_index)
    )


@router.post("/stream", openapi_extra=_BODY_DOC)
async def chat_stream(request: Request) -> Response:
    """SSE stream; answers only after a key produced its first token (errors before are JSON)."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    opening = service.open_stream(chat_call(body, user_id_of(request, body.user_id)))
    return await stream_answer(request, opening, keypool_sse, stream_headers)


@router.post("/batch")
async def chat_batch(request: Request) -> Response:
    """1 to 16 chat requests run at once, each on a different key where enough are usable."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    envelope = await read_model(request, BatchRequest, settings.max_message_chars)
    items = [batch_item(item, request, settings.max_message_chars) for item in envelope.requests]
    return json_response({"results": await run_batch(service, items)})


def batch_item(item: object, request: Request, max_chars: int) -> ChatCall | InvalidRequest:
    """An invalid item becomes that item's own `invalid_request` error, not the batch's."""
    try:
        body = validate(ChatRequest, item, max_chars)
        return chat_call(body, user_id_of(request, body.user_id))
    except InvalidRequest as exc:
        return exc
