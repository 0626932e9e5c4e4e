"""A gateway with the vault routes and VaultKeys wired the way the lifespan will wire them."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from app.api import vault as vault_routes
from app.vault.wiring import open_vault
from tests.support.servers import GatewayServer


def new_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def vault_gateway(env: Mapping[str, str], tmp_path: Path) -> GatewayServer:
    """Started; the lifespan state gains "vault" (None without KEYPOOL_MASTER_KEY)."""
    gateway = GatewayServer(env, tmp_path)
    app = gateway.app
    settings = gateway.settings
    original = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        async with original(app) as state:
            assert state is not None
            vault = await open_vault(settings, state["runtime"].engine)
            yield {**state, "vault": vault}

    app.router.lifespan_context = lifespan
    app.include_router(vault_routes.router)
    return gateway.start()
