"""A user's own routes, authenticated by their client key: PUT/DELETE their provider keys (BYOK).

Only with AUTH_MODE=token, where a client key names its user; in `none` and `trusted` mode there
is no caller identity to trust here, so these routes answer 404 `not_found`. Admins manage any
user's keys at /api/admin/users/{user_id}/provider-keys/{provider} in every mode.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.access.errors import ClientUnauthorized
from app.access.principal import Principal
from app.access.service import Access
from app.api.responses import json_response
from app.api.vault import UserKey, admin_of
from app.errors import KeypoolError

router = APIRouter(prefix="/api/me", tags=["me"])


class NotInTokenMode(KeypoolError):
    """/api/me exists only where client keys identify users (AUTH_MODE=token)."""

    status_code = 404
    type = "not_found"


def caller(request: Request) -> Principal:
    """The user of the presented client key; 401 `unauthorized` without a valid one."""
    access: Access | None = request.scope.get("state", {}).get("access")
    if access is None or access.mode != "token":
        raise NotInTokenMode("/api/me is served only with AUTH_MODE=token (client keys)")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    principal = (
        access.by_client_key(token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    if principal is None:
        raise ClientUnauthorized(
            "missing, unknown or revoked client key: send Authorization: Bearer kp-..."
        )
    return principal


Caller = Annotated[Principal, Depends(caller)]  # solved before the body: 401/404 come first


@router.put("/provider-keys/{provider}")
async def put_my_key(provider: str, body: UserKey, me: Caller, request: Request) -> Response:
    """Store (or replace) the caller's own key for `provider`: probed, then encrypted."""
    return json_response(await admin_of(request).put_byok(me.user_id, provider, body.key))


@router.delete("/provider-keys/{provider}")
async def delete_my_key(provider: str, me: Caller, request: Request) -> Response:
    return json_response(await admin_of(request).delete_byok(me.user_id, provider))
