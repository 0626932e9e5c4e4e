"""Admin routes of the key vault: run-time keys and users' own keys (bring your own key).

Wiring: the lifespan state carries the process's `VaultKeys` as "vault" (absent or None: the vault
is off, and these routes answer 409 vault_disabled).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from app.access.errors import ClientUnauthorized
from app.access.service import Access
from app.api.deps import AdminAuth, runtime_of
from app.api.pool_health import key_entry
from app.api.responses import json_response
from app.vault.keys import VaultKeys
from app.vault.service import VaultAdmin

router = APIRouter(prefix="/api/admin", tags=["vault"], dependencies=[AdminAuth])
# A user's own keys, set by that user with their client key (AUTH_MODE=token).
me_router = APIRouter(prefix="/api/me", tags=["vault"])


class UserKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=4096, repr=False)

    @field_validator("key")
    @classmethod
    def _not_blank(cls, key: str) -> str:
        if not key.strip():
            raise ValueError("must not be blank")
        return key.strip()


class NewKey(UserKey):
    validate_key: bool = Field(default=True, alias="validate")


def vault_of(request: Request) -> VaultKeys | None:
    vault: VaultKeys | None = request.scope.get("state", {}).get("vault")
    return vault


def admin_of(request: Request) -> VaultAdmin:
    runtime = runtime_of(request)
    return VaultAdmin(
        runtime.settings.providers, vault_of(request), runtime.transport, runtime.store, key_entry
    )


@router.post("/api-keys/{provider}", status_code=201)
async def add_key(provider: str, body: NewKey, request: Request) -> Response:
    entry = await admin_of(request).add(provider, body.key, body.validate_key)
    return json_response(entry, 201)


@router.delete("/api-keys/{provider}/{key_index}")
async def delete_key(provider: str, key_index: int, request: Request) -> Response:
    return json_response(await admin_of(request).delete(provider, key_index))


@router.put("/users/{user_id}/provider-keys/{provider}")
async def put_user_key(user_id: str, provider: str, body: UserKey, request: Request) -> Response:
    return json_response(await admin_of(request).put_byok(user_id, provider, body.key))


@router.delete("/users/{user_id}/provider-keys/{provider}")
async def delete_user_key(user_id: str, provider: str, request: Request) -> Response:
    return json_response(await admin_of(request).delete_byok(user_id, provider))


def me_of(request: Request) -> str:
    """The user whose client key this request presents; only `AUTH_MODE=token` has them."""
    access: Access | None = request.scope.get("state", {}).get("access")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    principal = None
    if access is not None and access.mode == "token" and scheme.lower() == "bearer":
        principal = access.by_client_key(presented.strip()) if presented.strip() else None
    if principal is None:
        raise ClientUnauthorized(
            "send your client key (Authorization: Bearer kp-...); these routes need AUTH_MODE=token"
        )
    return principal.user_id


Me = Annotated[str, Depends(me_of)]  # resolved before the body: no key, no validation answer


@me_router.put("/provider-keys/{provider}")
async def put_my_key(provider: str, user: Me, body: UserKey, request: Request) -> Response:
    return json_response(await admin_of(request).put_byok(user, provider, body.key))


@me_router.delete("/provider-keys/{provider}")
async def delete_my_key(provider: str, user: Me, request: Request) -> Response:
    return json_response(await admin_of(request).delete_byok(user, provider))
