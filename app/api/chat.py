"""/api/chat, /api/chat/stream and /api/chat/batch: the keypool-native chat routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from app.api.body import read_model
from app.api.deps import ChatServiceDep, SettingsDep
from app.api.errors import json_response
from app.api.sse import SSE_HEADERS, keypool_sse
from app.chat.service import ChatCall
from app.schemas import ChatRequest

router = APIRouter(prefix="/api/chat", tags=["chat"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ChatRequest.model_json_schema()}},
    }
}


def chat_call(body: ChatRequest, request: Request) -> ChatCall:
    return ChatCall(
        params=body.upstream_params(),
        model=body.model,
        provider=body.provider,
        fallback=body.fallback,
        user_id=request.headers.get("x-user-id") or body.user_id,
    )


def keypool_headers(provider: str, key_index: int) -> dict[str, str]:
    return {"x-keypool-provider": provider, "x-keypool-key-index": str(key_index)}


@router.post("", openapi_extra=_BODY_DOC)
async def chat(request: Request, service: ChatServiceDep, settings: SettingsDep) -> Response:
    """One chat completion: Path A without `model`, Path B with it."""
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    result = await service.complete(chat_call(body, request))
    return json_response(
        result.as_dict(), headers=keypool_headers(result.provider, result.key_index)
    )


@router.post("/stream", openapi_extra=_BODY_DOC)
async def chat_stream(request: Request, service: ChatServiceDep, settings: SettingsDep) -> Response:
    """SSE stream; answers only after a key produced its first token (errors before are JSON)."""
    body = await read_model(request, ChatRequest, settings.max_message_chars)
    stream = await service.open_stream(chat_call(body, request))
    return StreamingResponse(
        keypool_sse(stream),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **keypool_headers(stream.provider, stream.key_index)},
    )
