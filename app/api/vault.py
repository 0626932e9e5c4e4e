"""Admin routes of the key vault: run-time keys and users' own keys (bring your own key).

Wiring: the lifespan state carries the process's `VaultKeys` as "vault" (absent or None: the vault
is off, and these routes answer 409 vault_disabled).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from app.api.deps import AdminAuth, runtime_of
from app.api.pool_health import key_entry
from app.api.responses import json_response
from app.vault.keys import VaultKeys
from app.vault.service import VaultAdmin

router = APIRouter(prefix="/api/admin", tags=["vault"], dependencies=[AdminAuth])


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
