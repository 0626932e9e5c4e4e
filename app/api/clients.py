"""Admin API for client keys and per-user limits (bearer ADMIN_TOKEN, like the rest of /api/admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from app.access.budgets import utc_day
from app.access.errors import UnknownClient
from app.access.service import Access
from app.api.body import read_json
from app.api.deps import AdminAuth, RuntimeDep
from app.api.errors import invalid_request
from app.api.responses import json_response
from app.db.access import ClientKey
from app.db.session import DB_ERRORS
from app.errors import DatabaseUnavailable, InvalidRequest, UnknownUser
from app.timefmt import iso_utc

DB_DOWN: tuple[type[BaseException], ...] = (*DB_ERRORS, DatabaseUnavailable)

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[AdminAuth])

MAX_ID = 2**63 - 1


class NewClient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=255)
    tier: str | None = Field(default=None, max_length=32)
    name: str | None = Field(default=None, max_length=255)
    rpm: int | None = Field(default=None, ge=1, le=1_000_000)
    daily_budget_usd: float | None = Field(default=None, ge=0)


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: str | None = Field(default=None, max_length=32)
    rpm: int | None = Field(default=None, ge=1, le=1_000_000)
    daily_budget_usd: float | None = Field(default=None, ge=0)


def access_of(request: Request) -> Access:
    access: Access = request.scope["state"]["access"]
    return access


async def _body(request: Request, model: type[NewClient] | type[UserPatch]) -> Any:
    try:
        return model.model_validate(await read_json(request))
    except ValidationError as exc:
        raise invalid_request(exc) from None


def _tier_error(exc: ValueError, field: str) -> InvalidRequest:
    return InvalidRequest(
        str(exc), details={"details": [{"loc": ["body", field], "msg": str(exc)}]}
    )


def client_entry(access: Access, key: ClientKey, *, listed: bool = True) -> dict[str, Any]:
    limits = access.users.get(key.user_id)
    entry: dict[str, Any] = {
        "id": key.id,
        "key_prefix": key.key_prefix,
        "user_id": key.user_id,
        "tier": key.tier or (limits.tier if limits else None) or access.tiers.default,
        "name": key.name,
        "rpm": key.rpm,
        "daily_budget_usd": key.daily_budget_usd,
        "created_at": iso_utc(key.created_at),
    }
    if listed:
        entry["revoked_at"] = iso_utc(key.revoked_at)
        entry["last_used_at"] = iso_utc(key.last_used_at)
    return entry


@router.post("/clients", status_code=201)
async def create_client(request: Request) -> Response:
    access = access_of(request)
    body: NewClient = await _body(request, NewClient)
    try:
        access.check_tier(body.tier)
    except ValueError as exc:
        raise _tier_error(exc, "tier") from None
    try:
        secret, key = await access.create_client(
            body.user_id,
            tier=body.tier,
            name=body.name,
            rpm=body.rpm,
            daily_budget_usd=body.daily_budget_usd,
        )
    except DB_DOWN:
        raise DatabaseUnavailable("database unavailable; no key created") from None
    entry = client_entry(access, key, listed=False)
    return json_response({"id": key.id, "key": secret, **entry}, 201)


@router.get("/clients")
async def list_clients(request: Request) -> Response:
    access = access_of(request)
    try:
        keys = await access.list_clients()
    except DB_DOWN:
        raise DatabaseUnavailable("database unavailable; try again shortly") from None
    return json_response({"clients": [client_entry(access, k) for k in keys]})


@router.delete("/clients/{client_id}")
async def revoke_client(client_id: str, request: Request) -> Response:
    access = access_of(request)
    key_id = int(client_id) if client_id.isdigit() and len(client_id) < 20 else None
    if key_id is None or not 0 < key_id <= MAX_ID:
        raise UnknownClient(f"no client key {client_id!r}", details={"id": client_id})
    try:
        key = await access.revoke_client(key_id)
    except DB_DOWN:
        raise DatabaseUnavailable("database unavailable; key not revoked") from None
    if key is None:
        raise UnknownClient(f"no client key {client_id!r}", details={"id": key_id})
    return json_response(client_entry(access, key))


async def user_extras(access: Access, user_id: str) -> dict[str, Any]:
    """The access fields of a user entry: own limits (null = tier's) and today's usage.

    With the database down the entry is still served (as its group is): limits from the
    in-memory copy, usage from what this instance has not written yet.
    """
    try:
        limits = await access.user_limits(user_id)
        usage = await access.usage_today(user_id)
    except DB_DOWN:
        limits = access.users.get(user_id)
        usage = access.usage.pending_for(user_id, utc_day(access.clock()))
    return {
        "rpm": limits.rpm if limits else None,
        "daily_budget_usd": limits.daily_budget_usd if limits else None,
        "usage_today": {
            "requests": usage.requests,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "cost_usd": round(usage.cost_usd, 6),
        },
    }


@router.patch("/users/{user_id}")
async def patch_user(user_id: str, request: Request, runtime: RuntimeDep) -> Response:
    """Set a user's tier and own limits; a user never seen is created (so limits can be preset)."""
    access = access_of(request)
    body: UserPatch = await _body(request, UserPatch)
    try:
        access.check_tier(body.tier)
    except ValueError as exc:
        raise _tier_error(exc, "tier") from None
    changes = body.model_dump(exclude_unset=True)
    if "tier" in changes and changes["tier"] is None:
        changes.pop("tier")
    try:
        group = await runtime.groups.group_for(user_id)
        await runtime.groups.flush()
        limits = await access.patch_user(user_id, **changes)
        profile = await runtime.groups.get_profile(user_id)
        extras = await user_extras(access, user_id)
    except DB_DOWN:
        raise DatabaseUnavailable("database unavailable; user not changed") from None
    if limits is None or profile is None:
        raise UnknownUser(f"user {user_id!r} could not be saved", details={"user_id": user_id})
    return json_response(
        {
            "user_id": user_id,
            "api_key_group": group,
            "tier": limits.tier,
            "created_at": iso_utc(profile.created_at),
            **extras,
        }
    )
