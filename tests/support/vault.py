"""A gateway with the key vault: the app's own lifespan opens it when KEYPOOL_MASTER_KEY is set."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from tests.support.servers import GatewayServer


def new_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def vault_gateway(env: Mapping[str, str], tmp_path: Path) -> GatewayServer:
    """Started; the lifespan state carries "vault" (None without KEYPOOL_MASTER_KEY)."""
    return GatewayServer(env, tmp_path).start()
