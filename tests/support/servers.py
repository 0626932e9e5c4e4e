"""Real servers for tests: the gateway under uvicorn in a thread, configured like a deployment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app.config import load_settings
from app.demo.fake_provider import FakeProviderThread
from app.main import create_app
from app.serving import server_options


def require_service(host: str, port: int, name: str, *, always: bool = False) -> None:
    """A missing service skips locally but fails under CI=true (never a silent skip there);
    `always` fails it everywhere (tests that must never be skipped)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError:
        message = f"{name} is not reachable at {host}:{port}"
        if always or os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: a missing service is a failure)")
        pytest.skip(message)


def provider_env(
    name: str, fake: FakeProviderThread, keys: list[str], model: str = "fake-small", **extra: str
) -> dict[str, str]:
    """Env vars for one provider pointed at a fake provider."""
    prefix = name.upper()
    env = {
        f"{prefix}_API_KEYS": ",".join(keys),
        f"{prefix}_BASE_URL": fake.base_url,
        f"{prefix}_DEFAULT_MODEL": model,
    }
    env.update({f"{prefix}_{k.upper()}": v for k, v in extra.items()})
    return env


class _PromptServer(uvicorn.Server):
    """uvicorn's server, except that `stop` wakes its main loop at once instead of being noticed
    on the next 0.1 s tick: hundreds of gateways start and stop in a test run."""

    wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self.wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # on_tick: the Date header, should_exit
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn 0.54's shutdown, step for step (stop accepting, close idle connections, let
        running requests and tasks finish, then the app's lifespan shutdown), except that it
        polls every 5 ms where uvicorn pauses 0.1 s."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        try:
            await asyncio.wait_for(self._drained(), self.config.timeout_graceful_shutdown)
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _drained(self) -> None:
        while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()


class GatewayServer:
    """The real app under uvicorn on a loopback port, in a thread with its own event loop."""

    def __init__(self, env: Mapping[str, str], tmp_path: Path) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        full = {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
            "STATS_SPOOL_PATH": str(tmp_path / "spool.jsonl"),
            **env,
        }
        self.settings = load_settings(full)
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            ws_ping_interval=None,
            ws_max_size=self.settings.ws_max_message_bytes,
            **server_options(),  # as `keypool serve` runs it
        )
        self.server = _PromptServer(config)
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime(self) -> Any:
        return self.server.config.loaded_app  # for assertions only; prefer HTTP

    def stop(self) -> None:
        self.server.should_exit = True
        loop, wake = self.loop, self.server.wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(wake.set)
        self._thread.join(timeout=20)
