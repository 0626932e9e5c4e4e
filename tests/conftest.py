"""Shared fixtures: fake providers and gateways as real servers on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from app.demo.fake_provider import FakeProviderConfig, FakeProviderThread, KeyBehaviour
from tests.support.servers import GatewayServer
from tests.support.tls import share_default_tls_context

share_default_tls_context()

# Properties are about results, never speed: hypothesis' per-example deadline (200 ms) fails
# a correct example on a busy machine (timing goals belong in bench/).
hypothesis_settings.register_profile("keypool", deadline=None)
hypothesis_settings.load_profile("keypool")

FakeFactory = Callable[..., FakeProviderThread]
GatewayFactory = Callable[[Mapping[str, str]], GatewayServer]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `long(seconds)` go first, longest first, one every other place: `make test`
    hands tests to its xdist workers two at a time, so each long test starts at once on a
    worker of its own and the run does not end waiting for one of them."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("long")
        return float(mark.args[0]) if mark is not None and mark.args else 0.0

    long = [item for item in items if item.get_closest_marker("long")]
    if not long:
        return
    long.sort(key=seconds, reverse=True)
    rest = [item for item in items if not item.get_closest_marker("long")]
    head = [item for pair in zip(long, rest, strict=False) for item in pair]
    items[:] = head + long[len(rest) :] + rest[len(long) :]


@pytest.fixture
def make_fake() -> Iterator[FakeFactory]:
    """`make_fake({"k1": {"mode": "error_500"}, "k2": {}})` → a running fake provider."""
    started: list[FakeProviderThread] = []

    def factory(keys: Mapping[str, Mapping[str, Any]], **config: Any) -> FakeProviderThread:
        behaviours = {k: KeyBehaviour().with_changes(v) for k, v in keys.items()}
        fake = FakeProviderThread(FakeProviderConfig(keys=behaviours, **config)).start()
        started.append(fake)
        return fake

    yield factory
    for fake in started:
        fake.stop()


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """`make_gateway(env)` → the real app under uvicorn, configured only through env vars."""
    started: list[GatewayServer] = []

    def factory(env: Mapping[str, str]) -> GatewayServer:
        gateway = GatewayServer(env, tmp_path / f"gw{len(started)}").start()
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()
