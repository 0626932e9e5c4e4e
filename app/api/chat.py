"""/api/chat, /api/chat/stream and /api/chat/batch: the keypool-native chat routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import read_model, validate
from app.api.deps import runtime_of
from app.api.errors import json_response
from app.api.sse import keypool_sse, stream_answer
from app.chat.batch import run_batch
from app.chat.service import ChatCall
from app.chat.streams import ChatStream
from app.errors import InvalidRequest
from app.schemas import MAX_USER_ID_CHARS, BatchRequest, ChatRequest

router = APIRouter(prefix="/api/chat", tags=["chat"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ChatRequest.model_json_schema()}},
    }
}


def is_utf8_header(value: str) -> bool:
    """Starlette hands header bytes over as latin-1: valid UTF-8 survives the round trip."""
    try:
        value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return False
    return True


def user_id_of(request: Request, from_body: str | None) -> str | None:
    """`X-User-Id` wins over the body; bounded like the body field because it becomes a DB key."""
    header = request.headers.get("x-user-id")
    if header and not header.isascii() and not is_utf8_header(header):
        raise InvalidRequest(
            "invalid request: X-User-Id is not valid UTF-8",
            details={"details": [{"loc": ["header", "x-user-id"], "msg": "not valid UTF-8"}]},
        )
    if header and len(header) > MAX_USER_ID_CHARS:
        raise InvalidRequest(
            f"invalid request: X-User-Id is over {MAX_USER_ID_CHARS} characters",
            details={"details": [{"loc": ["header", "x-user-id"], "msg": "too long"}]},
        )
    return header or from_body


def chat_call(body: ChatRequest, request: Request) -> ChatCall:
    return ChatCall(
        params=body.upstream_params(),
        model=body.model,
        provider=body.provider,
        fallback=body.fallback,
        user_id=user_id_of(request, body.user_id),
    )


def keypool_headers(provider: str, key_index: int) -> dict[str, str]:
    return {"x-keypool-provider": provider, "x-keypool-key-index": str(key_index)}


def stream_headers(stream: ChatStream) -> dict[str, str]:
    return keypool_headers(stream.provider, stream.key_index)


@router.post("", openapi_extra=_BODY_DOC)
async def chat(request: Request) -> Response:
    """One chat completion: Path A without `model`, Path B with it."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    result = await service.complete(chat_call(body, request))
    return json_response(
        result.as_dict(), headers=keypool_headers(result.provider, result.key_index)
    )


@router.post("/stream", openapi_extra=_BODY_DOC)
async def chat_stream(request: Request) -> Response:
    """SSE stream; answers only after a key produced its first token (errors before are JSON)."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    call = chat_call(body, request)
    opening = service.open_stream(call)
    return await stream_answer(request, opening, keypool_sse, stream_headers, call.user_id)


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
        return chat_call(validate(ChatRequest, item, max_chars), request)
    except InvalidRequest as exc:
        return exc
