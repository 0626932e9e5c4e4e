"""The OpenAPI document: resolvable body schemas, the batch body, bearer schemes, every answer.

Chat routes read their bodies themselves (fast lane, one JSON parse), so FastAPI cannot infer
them; their schemas come from the pydantic models here, with `$defs` moved to components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.schemas import ChatRequest, OpenAIChatRequest

_REF = "#/components/schemas/{model}"

_ENVELOPE = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            "additionalProperties": True,
        }
    },
}
_OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
            "additionalProperties": True,
        }
    },
}
_BATCH = {
    "type": "object",
    "required": ["requests"],
    "properties": {
        "requests": {
            "type": "array",
            "minItems": 1,
            "maxItems": 16,
            "items": {"$ref": _REF.format(model="ChatRequest")},
            "description": "Each item is validated alone: a bad item is that item's error.",
        }
    },
}

# Why each status can happen, per family of routes.
_CHAT_ERRORS = {
    "400": "unknown_provider / unknown_model / upstream_bad_request",
    "404": "model_not_found (Path B)",
    "408": "request_timeout: the body did not arrive in time",
    "413": "payload_too_large",
    "422": "invalid_request, with details",
    "429": "rate_limited (Retry-After) / too_many_streams",
    "499": "client_closed_request (stream routes: the client left before the first token)",
    "500": "internal_error",
    "503": "all_providers_failed / all_keys_failed / not_ready / overloaded",
}
_OPENAI_ERRORS = {
    "400": "invalid_request_error (validation, unknown model, upstream 400)",
    "404": "invalid_request_error, code model_not_found",
    "408": "request_timeout",
    "413": "payload_too_large",
    "429": "rate_limit_error",
    "499": "client_closed_request (stream: the client left before the first token)",
    "500": "api_error, code internal_error",
    "503": "api_error (all providers or keys failed)",
}
_ADMIN_ERRORS = {
    "401": "unauthorized: missing or wrong admin token",
    "403": "admin_disabled: no ADMIN_TOKEN configured",
    "404": "unknown_key / unknown_user / not_found",
    "409": "vault_disabled / duplicate_key / key_from_environment",
    "422": "invalid_request (a path parameter of the wrong type) / invalid_key",
    "500": "internal_error",
    "502": "upstream_unreachable: a new key could not be checked",
    "503": "database_unavailable",
}
_ME_ERRORS = {
    "401": "unauthorized: missing, unknown or revoked client key",
    "404": "not_found: served only with AUTH_MODE=token",
    "409": "vault_disabled / duplicate_key",
    "422": "invalid_request / invalid_key",
    "500": "internal_error",
    "502": "upstream_unreachable: the key could not be checked",
    "503": "database_unavailable",
}
_PLAIN_ERRORS = {"500": "internal_error", "503": "not_ready / overloaded"}


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _json_body(ref: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def _errors(statuses: dict[str, str], schema: str) -> dict[str, Any]:
    ref = {"$ref": _REF.format(model=schema)}
    return {
        status: {"description": why, "content": {"application/json": {"schema": ref}}}
        for status, why in statuses.items()
    }


def _document_errors(path: str, op: dict[str, Any], responses: dict[str, Any]) -> None:
    """Each family of routes answers its own error shape for its own reasons."""
    if path.startswith("/v1/"):
        responses.update(_errors(_OPENAI_ERRORS, "OpenAIError"))
    elif path.startswith("/api/admin/"):
        op["security"] = [{"AdminToken": []}]
        responses.update(_errors(_ADMIN_ERRORS, "ErrorEnvelope"))
    elif path.startswith("/api/me/"):
        op["security"] = [{"ClientKey": []}]
        responses.update(_errors(_ME_ERRORS, "ErrorEnvelope"))
    elif path.startswith("/api/chat"):
        responses.update(_errors(_CHAT_ERRORS, "ErrorEnvelope"))
    else:
        responses.update(_errors(_PLAIN_ERRORS, "ErrorEnvelope"))


def build_openapi(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["ErrorEnvelope"] = _ENVELOPE
    schemas["OpenAIError"] = _OPENAI_ERROR
    schemas["BatchRequest"] = _BATCH
    chat = _schema(ChatRequest, schemas)
    openai = _schema(OpenAIChatRequest, schemas)
    components["securitySchemes"] = {
        "AdminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"},
        "MetricsToken": {"type": "http", "scheme": "bearer", "description": "METRICS_TOKEN"},
        "ClientKey": {"type": "http", "scheme": "bearer", "description": "a kp-... client key"},
    }
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's own shape; ours is the envelope
            _document_errors(path, op, responses)
            if path == "/metrics":
                responses["200"] = {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
                op["security"] = [{"MetricsToken": []}, {}]
                responses.update(_errors({"401": "unauthorized (METRICS_TOKEN)"}, "ErrorEnvelope"))
            if path in ("/api/chat", "/api/chat/stream") and method == "post":
                op["requestBody"] = _json_body(chat)
            elif path == "/api/chat/batch" and method == "post":
                op["requestBody"] = _json_body({"$ref": _REF.format(model="BatchRequest")})
            elif path == "/v1/chat/completions" and method == "post":
                op["requestBody"] = _json_body(openai)
            if path.endswith("/stream") or path == "/v1/chat/completions":
                ok = responses.setdefault("200", {"description": "Successful Response"})
                ok.setdefault("content", {})["text/event-stream"] = {
                    "schema": {
                        "type": "object",
                        "description": "one server-sent event: `data: {json}`",
                        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                    }
                }
    return spec


def install_openapi(app: FastAPI) -> None:
    """Replace FastAPI's generator (built once, on the first /openapi.json)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
