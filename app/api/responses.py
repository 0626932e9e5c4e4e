"""Success responses: JSON bodies and the headers that name the key that answered."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from app.chat.streams import ChatStream


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def keypool_headers(provider: str, key_index: int | str) -> dict[str, str]:
    return {"x-keypool-provider": provider, "x-keypool-key-index": str(key_index)}


def stream_headers(stream: ChatStream) -> dict[str, str]:
    return keypool_headers(stream.provider, stream.key_index)
