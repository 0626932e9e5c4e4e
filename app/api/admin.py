"""Admin API (bearer ADMIN_TOKEN): pool health, key disable/enable/probe, user groups."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.clients import DB_DOWN, access_of, user_extras
from app.api.deps import AdminAuth, RuntimeDep
from app.api.pool_health import key_entry, pool_health
from app.api.responses import json_response
from app.config import ProviderConfig
from app.errors import DatabaseUnavailable, UnknownKey, UnknownUser
from app.runtime import Runtime
from app.timefmt import iso_utc

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[AdminAuth])


def _key(runtime: Runtime, provider: str, key_index: int) -> ProviderConfig:
    config = next((p for p in runtime.settings.providers if p.name == provider.lower()), None)
    if config is None or not 0 <= key_index < len(config.keys):
        raise UnknownKey(
            f"no key {key_index} for provider {provider!r}",
            # A 20-digit index is a valid int but not a JSON one orjson will write.
            details={
                "provider": provider,
                "key_index": key_index if abs(key_index) < 2**63 else None,
            },
        )
    return config


@router.get("/api-keys/health")
async def keys_health(runtime: RuntimeDep) -> Response:
    health, providers = await pool_health(runtime.service.providers, runtime.store, time.time())
    try:
        groups = [
            {
                "key_group": g.key_group,
                "user_count": g.user_count,
                "total_requests": g.total_requests,
                "total_tokens": g.total_tokens,
                "last_request_at": g.last_request_at,
            }
            for g in await runtime.groups.group_stats()
        ]
    except DatabaseUnavailable:
        groups = []
    return json_response(
        {"ok": True, "health": health, "keyGroupStats": groups, "providers": providers}
    )


async def _set_disabled(
    runtime: Runtime, provider: str, key_index: int, disabled: bool
) -> Response:
    config = _key(runtime, provider, key_index)
    status = await runtime.store.set_disabled(config.name, key_index, disabled)
    return json_response(key_entry(config, key_index, status, time.time()))


@router.post("/api-keys/{provider}/{key_index}/disable")
async def disable_key(provider: str, key_index: int, runtime: RuntimeDep) -> Response:
    return await _set_disabled(runtime, provider, key_index, True)


@router.post("/api-keys/{provider}/{key_index}/enable")
async def enable_key(provider: str, key_index: int, runtime: RuntimeDep) -> Response:
    return await _set_disabled(runtime, provider, key_index, False)


@router.post("/api-keys/probe")
async def probe_keys(runtime: RuntimeDep) -> Response:
    results = await runtime.prober.probe_all()
    return json_response({"results": [r.as_dict() for r in results]})


@router.get("/users/{user_id}")
async def get_user(user_id: str, runtime: RuntimeDep, request: Request) -> Response:
    try:
        profile = await runtime.groups.get_profile(user_id)
        extras = await user_extras(access_of(request), user_id) if profile else {}
    except DB_DOWN:
        raise DatabaseUnavailable("database unavailable; try again shortly") from None
    if profile is None:
        raise UnknownUser(f"user {user_id!r} was never seen", details={"user_id": user_id})
    return json_response(
        {
            "user_id": profile.user_id,
            "api_key_group": profile.api_key_group,
            "tier": profile.tier,
            "created_at": iso_utc(profile.created_at),
            **extras,
        }
    )


@router.post("/users/rebalance")
async def rebalance_users(runtime: RuntimeDep) -> Response:
    try:
        result = await runtime.groups.rebalance()
    except DatabaseUnavailable:
        raise DatabaseUnavailable("database unavailable; rebalance not done") from None
    return json_response({"users": result.users, "groups": result.groups, "moved": result.moved})
