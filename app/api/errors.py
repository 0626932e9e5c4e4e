"""Exception handlers: every non-2xx answer is the JSON error envelope, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.api.responses import json_response
from app.errors import InvalidRequest, KeypoolError

logger = logging.getLogger("keypool.api")

_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}
_HTTP_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    # An empty loc means the body itself (not an object): name it, so every detail names a field.
    return [
        {
            "loc": [str(part) for part in err.get("loc", ())] or ["body"],
            "msg": str(err.get("msg", "")),
        }
        for err in exc.errors()
    ]


def invalid_request(exc: ValidationError) -> InvalidRequest:
    details = validation_details(exc)
    fields = ", ".join(".".join(d["loc"]) or "body" for d in details[:5])
    return InvalidRequest(f"invalid request: {fields}", details={"details": details})


def is_openai_path(request: Request) -> bool:
    return request.url.path.startswith("/v1/")


def first_bad_field(details: list[dict[str, Any]]) -> str | None:
    """OpenAI's `param`: the first bad field's path, minus a `body` prefix and union-member tags.

    Pydantic reports a union field once per member (`content.str`, `content.list[...]`), so the
    path is the common prefix of the errors that share the first one's top-level field.
    """
    locs = [d["loc"][1:] if d["loc"][:1] == ["body"] else d["loc"] for d in details]
    prefix: list[str] = locs[0]
    for loc in locs[1:]:
        if loc[:1] == prefix[:1]:
            same = next(
                (i for i, (a, b) in enumerate(zip(prefix, loc, strict=False)) if a != b), None
            )
            prefix = prefix[: min(len(prefix), len(loc)) if same is None else same]
    return ".".join(prefix) or None


def openai_error_body(exc: KeypoolError) -> dict[str, Any]:
    """OpenAI's error shape; the keypool type becomes `code`, the first bad field `param`."""
    status = 400 if isinstance(exc, InvalidRequest) else exc.status_code
    kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    details = exc.details.get("details")
    param = first_bad_field(details) if isinstance(details, list) and details else None
    extra = {k: v for k, v in exc.details.items() if k != "details"}
    error = {"message": exc.message, "type": kind, "param": param, "code": exc.type, **extra}
    return {"error": error}


def error_response(request: Request, exc: KeypoolError) -> Response:
    if is_openai_path(request):
        status = 400 if isinstance(exc, InvalidRequest) else exc.status_code
        return json_response(openai_error_body(exc), status, exc.headers)
    return json_response(exc.body(), exc.status_code, exc.headers)


async def _keypool_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeypoolError)
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError | ValidationError)
    details = validation_details(exc)
    error = InvalidRequest("invalid request", details={"details": details})
    return error_response(request, error)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error = KeypoolError(str(exc.detail))
    error.status_code = exc.status_code
    error.type = _HTTP_TYPES.get(exc.status_code, "http_error")
    return error_response(request, error)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Not logged here: Starlette re-raises after this answer and the edge middleware
    # (api/edge.py) logs it once, by type only (exception text may carry upstream payloads);
    # the edge also adds the request's id, as to every answer.
    error = KeypoolError("internal error; the request was not completed")
    return error_response(request, error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KeypoolError, _keypool_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
