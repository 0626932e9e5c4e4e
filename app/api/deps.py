"""Dependencies over the lifespan state, as Annotated aliases so routes read like prose."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from app.chat.service import ChatService
from app.config import Settings
from app.errors import AdminDisabled, Unauthorized
from app.runtime import Runtime


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The one way to the runtime: the lifespan state (`LifespanState`) of a request or socket.

    The hot chat routes call it directly: FastAPI's dependency solving costs more per request
    than the whole key-selection step."""
    runtime: Runtime = connection.scope["state"]["runtime"]
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return runtime_of(request)


async def get_chat_service(request: Request) -> ChatService:
    return runtime_of(request).service


async def get_settings(request: Request) -> Settings:
    return runtime_of(request).settings


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ChatServiceDep = Annotated[ChatService, Depends(get_chat_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """Constant-time bearer check; no token configured means the admin API is off."""
    if settings.admin_token is None:
        raise AdminDisabled("admin API disabled: set ADMIN_TOKEN to enable it")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.admin_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("missing or invalid admin token", headers={"WWW-Authenticate": "Bearer"})


AdminAuth = Depends(require_admin)
