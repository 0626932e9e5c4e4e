"""OpenAI-compatible /v1/chat/completions and /v1/models, usable by the official SDKs unchanged."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.body import body_doc, read_json, validate
from app.api.cached import answer
from app.api.calls import AUTO_MODEL, group_key, openai_call, tier_of, user_id_of
from app.api.deps import ChatServiceDep, runtime_of
from app.api.observe import noting
from app.api.responses import json_response, stream_headers
from app.api.sse import DONE, sse, stream_answer
from app.chat.service import ChatResult, ChatService
from app.chat.streams import ChatStream, StreamInterrupted
from app.errors import ModelNotFound
from app.schemas import OpenAIChatRequest

router = APIRouter(prefix="/v1", tags=["openai"])

_BODY_DOC = body_doc(OpenAIChatRequest)


@router.post("/chat/completions", openapi_extra=_BODY_DOC)
async def chat_completions(request: Request) -> Response:
    """`model: "auto"` takes Path A; any other model takes Path B."""
    runtime = runtime_of(request)
    service, settings = runtime.service, runtime.settings
    raw = await read_json(request)
    body = validate(OpenAIChatRequest, raw, settings.max_message_chars)
    call = openai_call(body, raw, user_id_of(request, group_key(body.user)), tier_of(request))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def render(stream: ChatStream) -> AsyncIterator[bytes]:
            return openai_chunks(stream, include_usage)

        return await stream_answer(
            request, service.open_stream(call), render, stream_headers, call.user_id
        )
    noted = noting(request, completion_body)  # the request log line: path, model, attempts
    done = await answer(service, runtime.cache, call, "openai", noted)
    return json_response(done.body, headers=done.headers())


def completion_body(result: ChatResult) -> dict[str, Any]:
    """OpenAI's chat.completion: the upstream's body, with keypool's final usage."""
    body = dict(result.completion.raw)
    body.setdefault("object", "chat.completion")
    body["usage"] = {**body.get("usage", {}), **result.usage.as_dict()}
    return body


async def openai_chunks(stream: ChatStream, include_usage: bool) -> AsyncIterator[bytes]:
    """Relay upstream chunks; the usage chunk only when asked, as OpenAI does; then [DONE].

    The upstream is always asked for usage (to account for it); its usage-only chunk is
    dropped here and re-issued, with the stream's own id, only for clients that asked.
    """
    try:
        async for chunk in stream:
            if chunk.raw.get("choices"):
                yield sse(chunk.raw)
        if include_usage and stream.usage is not None:
            yield sse(usage_chunk(stream))
        yield DONE
    except StreamInterrupted as exc:
        error = {
            "message": f"upstream stream failed: {exc.cause.reason}",
            "type": "api_error",
            "code": "upstream_stream_error",
            "param": None,
        }
        yield sse({"error": error})
    finally:
        await stream.aclose()


def usage_chunk(stream: ChatStream) -> dict[str, Any]:
    """OpenAI's final usage chunk: empty `choices`, the stream's id, model and usage."""
    assert stream.usage is not None
    return {
        "id": stream.id or "chatcmpl-keypool",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": stream.model,
        "choices": [],
        "usage": stream.usage.as_dict(),
    }


def _models(service: ChatService) -> list[dict[str, Any]]:
    created = int(time.time())
    data = [{"id": AUTO_MODEL, "object": "model", "created": created, "owned_by": "keypool"}]
    for name in service.model_groups:  # model groups: one name, several providers
        data.append({"id": name, "object": "model", "created": created, "owned_by": "keypool"})
    for provider in service.providers:
        for model in dict.fromkeys((provider.default_model, *provider.models)):
            data.append(
                {
                    "id": f"{provider.name}/{model}",
                    "object": "model",
                    "created": created,
                    "owned_by": provider.name,
                }
            )
    return data


@router.get("/models")
async def list_models(service: ChatServiceDep) -> Response:
    """`auto` (Path A), the model groups, and every `<provider>/<model>` the gateway can route."""
    return json_response({"object": "list", "data": _models(service)})


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, service: ChatServiceDep) -> Response:
    """One entry of the list (the SDKs' `models.retrieve`); 404 `model_not_found` otherwise."""
    for model in _models(service):
        if model["id"] == model_id:
            return json_response(model)
    raise ModelNotFound(f"model {model_id!r} is not served here", details={"model": model_id})
