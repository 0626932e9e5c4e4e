"""Ways to run the fake provider: on the current event loop, or in a thread with its own loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from app.demo.fake.config import FakeProviderConfig, KeyBehaviour
from app.demo.fake.server import build_app
from app.demo.fake.state import FakeProviderState

T = TypeVar("T")


class FakeProvider:
    """A listening fake provider. Its methods must be called on the loop that runs it."""

    def __init__(self, state: FakeProviderState, runner: web.AppRunner, host: str, port: int):
        self.state = state
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}/v1"
        self._runner = runner

    def stats(self) -> dict[str, Any]:
        """The same dict `GET /_control/stats` serves."""
        return self.state.snapshot()

    def set_key(self, key: str, **changes: Any) -> KeyBehaviour:
        """Change (or add, from the default behaviour) one key's behaviour at run time."""
        return self.state.update_key(key, changes)

    def reset(self) -> None:
        """Zero the counters and empty the rate windows; live gauges are kept."""
        self.state.reset()

    async def stop(self) -> None:
        await self._runner.cleanup()


async def start_fake_provider(
    config: FakeProviderConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = 0.1,
) -> FakeProvider:
    """Start listening and return the handle; the caller must `await fake.stop()`.

    Handler cancellation is on so a client that leaves ends a `hang` or a stream at once.
    `stop()` gives running handlers `shutdown_timeout` to finish, then cancels them (a fake
    needs no graceful drain, and tests stopping with a `hang` in progress should not wait).
    """
    state = FakeProviderState(config or FakeProviderConfig())
    runner = web.AppRunner(
        build_app(state),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    server = runner.server
    if server is not None:
        state.count_connections = lambda: len(server.connections)
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return FakeProvider(state, runner, host, bound_port)


@asynccontextmanager
async def run_fake_provider(
    config: FakeProviderConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeProvider]:
    """`async with run_fake_provider(cfg) as fake:` serves on the current loop for the block."""
    fake = await start_fake_provider(config, host, port)
    try:
        yield fake
    finally:
        await fake.stop()


class FakeProviderThread:
    """The fake on a background thread with its own loop, for sync tests and servers in threads.

    Every public method is thread-safe: it runs on the fake's loop and waits for the result.
    """

    def __init__(
        self, config: FakeProviderConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._config = config
        self._host, self._requested_port = host, port
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._fake: FakeProvider | None = None
        self._error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return self._running().base_url

    @property
    def port(self) -> int:
        return self._running().port

    def start(self) -> FakeProviderThread:
        """Start the thread and block until the server listens (or re-raise why it could not)."""
        if self._thread is not None:
            raise RuntimeError("FakeProviderThread already started")
        self._thread = threading.Thread(target=self._run, name="fake-provider", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._fake is not None and self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    def stats(self) -> dict[str, Any]:
        return self._call(lambda fake: fake.stats())

    def set_key(self, key: str, **changes: Any) -> KeyBehaviour:
        return self._call(lambda fake: fake.set_key(key, **changes))

    def reset(self) -> None:
        self._call(lambda fake: fake.reset())

    def __enter__(self) -> FakeProviderThread:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _running(self) -> FakeProvider:
        if self._fake is None:
            raise RuntimeError("FakeProviderThread is not running; call start() first")
        return self._fake

    def _call(self, fn: Callable[[FakeProvider], T]) -> T:
        fake, loop = self._running(), self._loop
        assert loop is not None

        async def on_loop() -> T:
            return fn(fake)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(timeout=10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        try:
            fake = self._fake = await start_fake_provider(
                self._config, self._host, self._requested_port
            )
        except Exception as exc:  # handed to start(), which re-raises it in the caller's thread
            self._error = exc
            return
        finally:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._fake = None
            await fake.stop()
