"""OpenAI wire shapes the fake produces: parsed chat requests, completions, SSE chunks, errors."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()

# status -> (OpenAI error type, code)
ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}


class BadRequest(Exception):
    """The chat body is not a valid OpenAI request; the message becomes the 400 error."""


@dataclass(slots=True)
class ChatParams:
    """The fields of a chat completion request the fake looks at."""

    model: str
    stream: bool
    include_usage: bool
    prompt_tokens: int
    max_tokens: int | None


QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."


def quota_body() -> bytes:
    """OpenAI's 429 for an account out of quota (not a rate limit: no reset is announced)."""
    error = {"message": QUOTA_MESSAGE, "type": "insufficient_quota", "code": "insufficient_quota"}
    return orjson.dumps({"error": {**error, "param": None}})


def error_body(status: int, message: str) -> bytes:
    kind, code = ERROR_KINDS.get(status, ("server_error", None))
    error = {"message": message, "type": kind, "code": code, "param": None}
    return orjson.dumps({"error": error})


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # multi-part content: count the text parts
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return 0


def parse_chat(raw: bytes) -> ChatParams:
    """Validate just enough of the body to answer like OpenAI; raise BadRequest otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    messages, model = body.get("messages"), body.get("model")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is a required property and must be a non-empty array.")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter")
    chars = sum(_content_chars(m.get("content")) for m in messages if isinstance(m, dict))
    options = body.get("stream_options")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return ChatParams(
        model=model,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        prompt_tokens=max(1, chars // 4),
        max_tokens=max_tokens if type(max_tokens) is int and max_tokens > 0 else None,
    )


def completion_size(chunks: int, max_tokens: int | None) -> tuple[int, str]:
    """(number of chunks, finish_reason): `max_tokens` truncates the answer like OpenAI does."""
    if max_tokens is not None and max_tokens < chunks:
        return max_tokens, "length"
    return chunks, "stop"


@lru_cache(maxsize=64)
def answer_text(chunks: int) -> str:
    return "".join(f"w{i} " for i in range(chunks))


def new_id() -> str:
    return f"chatcmpl-{_ID_PREFIX}{next(_ids):08x}"


def usage(params: ChatParams, completion_tokens: int) -> dict[str, int]:
    total = params.prompt_tokens + completion_tokens
    return {
        "prompt_tokens": params.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


def completion_body(params: ChatParams, chunks: int, finish_reason: str) -> bytes:
    message = {"role": "assistant", "content": answer_text(chunks)}
    return orjson.dumps(
        {
            "id": new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": params.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage(params, chunks),
        }
    )


class ChunkEncoder:
    """Builds the `data: {...}\\n\\n` events of one streamed completion (shared id and created)."""

    __slots__ = ("_base",)

    def __init__(self, model: str) -> None:
        self._base = {
            "id": new_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def _event(self, **fields: Any) -> bytes:
        return b"data: " + orjson.dumps({**self._base, **fields}) + b"\n\n"

    def content(self, index: int) -> bytes:
        delta = {"content": f"w{index} "}
        if index == 0:
            delta = {"role": "assistant", "content": "w0 "}
        return self._event(choices=[{"index": 0, "delta": delta, "finish_reason": None}])

    def finish(self, finish_reason: str) -> bytes:
        return self._event(choices=[{"index": 0, "delta": {}, "finish_reason": finish_reason}])

    def usage(self, params: ChatParams, chunks: int) -> bytes:
        return self._event(choices=[], usage=usage(params, chunks))


DONE_EVENT = b"data: [DONE]\n\n"


def models_body(models: list[str] | None) -> bytes:
    created = int(time.time())
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "fake"}
        for name in (models or [])
    ]
    return orjson.dumps({"object": "list", "data": data})
