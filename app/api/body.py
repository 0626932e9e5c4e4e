"""Request body reading: size cap, JSON parsing and validation into a model, with clear errors."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.depth import MAX_JSON_DEPTH, too_deep
from app.api.errors import invalid_request
from app.api.responses import json_response
from app.errors import InvalidRequest, KeypoolError, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)
DEFAULT_BODY_TIMEOUT_S = 15.0


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `requestBody` for a route that reads its body itself (`read_model`)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def parse_json(raw: bytes) -> Any:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"body is not valid JSON: {exc.msg} at position {exc.pos}",
            details={"details": [{"loc": ["body"], "msg": "invalid JSON"}]},
        ) from None
    if too_deep(raw, data):
        raise InvalidRequest(
            f"body nests JSON more than {MAX_JSON_DEPTH} levels deep",
            details={"details": [{"loc": ["body"], "msg": "JSON nested too deep"}]},
        )
    return data


def validate(model: type[M], data: Any, max_message_chars: int) -> M:
    try:
        return model.model_validate(data, context={"max_message_chars": max_message_chars})
    except ValidationError as exc:
        raise invalid_request(exc) from None


class RequestTimeout(KeypoolError):
    """The body did not arrive within BODY_READ_TIMEOUT_S (a client declaring bytes it never sends)."""

    status_code = 408
    type = "request_timeout"


async def read_json(request: Request) -> Any:
    settings = getattr(request.app.state, "settings", None)
    timeout_s = settings.body_read_timeout_s if settings is not None else DEFAULT_BODY_TIMEOUT_S
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.body()
    except ClientDisconnect:
        raise InvalidRequest("client disconnected while sending the body") from None
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from None
    return parse_json(raw)


async def read_model(request: Request, model: type[M], max_message_chars: int) -> M:
    return validate(model, await read_json(request), max_message_chars)


class BodyLimitMiddleware:
    """Refuse bodies over `max_bytes` with 413 before they are buffered (Content-Length or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                if int(value) > self.max_bytes:
                    await self._refuse(scope, receive, send)
                else:  # the server enforces Content-Length: nothing to count
                    await self.app(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise PayloadTooLarge(f"request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"request body is over {self.max_bytes} bytes")
        await json_response(error.body(), error.status_code)(scope, receive, send)
