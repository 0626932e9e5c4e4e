"""Which keys serve a request (shared pool or the user's own), and leases across key-list changes."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from app.chat.clients import ClientCache
from app.chat.directory import ProviderDirectory
from app.chat.fallback import FallbackRunner
from app.chat.live import LiveKeys
from app.chat.pools import KeyPoolView, SharedPools, WithOwnKeys
from app.chat.routing import Route
from app.chat.settlement import Lease, Settlement
from app.config import ApiKey, ProviderConfig, fingerprint
from app.keys.model import Ask, Outcome, RateLimitSignal, Release
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.providers.client import ProviderClient, Usage
from app.providers.transport import AiohttpTransport
from app.state.base import KeyLayout
from app.state.memory import MemoryStateStore
from tests.support.scripted import RecordingSink

NOW = 1_000.0


def keys(*secrets: str) -> tuple[ApiKey, ...]:
    return tuple(ApiKey(s, fingerprint("alpha", i, s)) for i, s in enumerate(secrets))


ALPHA = ProviderConfig("alpha", "http://alpha.invalid/v1", "m", keys("sk-a-0", "sk-a-1", "sk-a-2"))


@dataclass(frozen=True, slots=True)
class Own:
    config: ProviderConfig
    store: MemoryStateStore

    def client(self, index: int, model: str) -> ProviderClient:
        return None  # type: ignore[return-value]  # the attempts here never call upstream


class OwnKeys:
    def __init__(self, pools: dict[tuple[str, str], Own]) -> None:
        self.pools = pools

    def get(self, user_id: str | None, provider: str) -> Own | None:
        return self.pools.get((user_id or "", provider))


class World:
    def __init__(self) -> None:
        self.directory = ProviderDirectory([ALPHA])
        self.store = MemoryStateStore({"alpha": KeyPool(3, RoundRobin())}, rng=random.Random(0))
        self.clients = ClientCache([ALPHA], AiohttpTransport())
        own_config = replace(ALPHA, keys=(ApiKey("sk-own", "alpha:byok:-own"),))
        self.own = Own(own_config, MemoryStateStore({"alpha": KeyPool(1, RoundRobin())}))
        self.pools = WithOwnKeys(
            self.directory, self.store, self.clients, OwnKeys({("alice", "alpha"): self.own})
        )
        self.sink = RecordingSink()
        self.settlement = Settlement(self.store, self.sink, lambda: NOW, pools=self.pools)
        self.live = LiveKeys(self.directory, self.clients, self.store)

    async def lease_on(self, index: int, user: str | None = None) -> Lease:
        view = self.pools.resolve("alpha", user)
        grant = await view.store.acquire("alpha", NOW, Ask(preferred=index))
        assert grant.index == index
        lease = Lease(view.config, index, "m", None, self.settlement, user)
        lease.view = view
        return lease

    def delete(self, index: int) -> None:
        remaining = [i for i in range(len(self.directory.get("alpha").keys)) if i != index]
        secrets = [self.directory.get("alpha").keys[i].secret for i in remaining]
        config = replace(ALPHA, keys=keys(*secrets), key_weights=(1.0,) * len(secrets))
        fields = tuple(f"k{i}" for i in remaining)
        self.live.apply(config, KeyLayout(tuple(remaining), fields, config.key_weights))


class TestLeasesAcrossAChange:
    async def test_a_lease_on_a_key_that_moved_settles_on_it_at_its_new_index(self):
        world = World()
        lease = await world.lease_on(2)
        world.delete(1)
        await lease.finish(Outcome.RATE_LIMITED, usage=Usage(1, 1, 2))
        statuses = world.store.pools["alpha"].statuses
        assert [s.in_flight for s in statuses] == [0, 0]
        assert (statuses[1].requests, statuses[1].errors, statuses[0].errors) == (1, 1, 0)
        assert lease.key_index == 1
        assert world.sink.events[0].fingerprint == fingerprint("alpha", 1, "sk-a-2")
        assert world.clients.get("alpha", 1, "m").key.secret == "sk-a-2"

    async def test_a_lease_on_a_deleted_key_touches_no_other_key(self):
        world = World()
        lease = await world.lease_on(1)
        world.delete(1)
        await lease.finish(Outcome.AUTH_FAILED)
        statuses = world.store.pools["alpha"].statuses
        assert [(s.state.value, s.errors, s.in_flight) for s in statuses] == [("active", 0, 0)] * 2


class TestOwnKeys:
    async def test_a_users_own_key_serves_them_and_settles_on_their_pool_only(self):
        world = World()
        view = world.pools.resolve("alpha", "alice")
        assert (view.byok, view.label(0), view.config.keys[0].fingerprint) == (
            True,
            "byok",
            "alpha:byok:-own",
        )
        assert not world.pools.resolve("alpha", "bob").byok
        assert not world.pools.resolve("alpha", None).byok
        lease = await world.lease_on(0, "alice")
        await lease.finish(Outcome.RATE_LIMITED, usage=Usage(1, 1, 2))
        assert world.own.store.pools["alpha"].statuses[0].errors == 1
        assert all(s.requests == 0 for s in world.store.pools["alpha"].statuses)
        event = world.sink.events[0]
        assert (event.byok, event.key_label, event.fingerprint) == (True, "byok", "alpha:byok:-own")

    def test_a_shared_view_follows_the_directory(self):
        world = World()
        before = world.pools.resolve("alpha", None)
        world.delete(0)
        assert isinstance(before, KeyPoolView)
        assert world.pools.follow(before, 0) is None
        moved = world.pools.follow(before, 2)
        assert moved is not None
        assert moved[1] == 1
        assert moved[0].generation == world.directory.generation("alpha") == 1
        assert isinstance(world.pools, SharedPools)


class TestOwnKeysAndTheFairLine:
    async def test_a_users_cooling_own_key_is_waited_for_outside_the_shared_line(self):
        world = World()
        own = world.own.store
        assert (await own.acquire("alpha", NOW, Ask())).index == 0
        await own.release(Release("alpha", 0, Outcome.RATE_LIMITED, NOW, RateLimitSignal(2.0)))
        clock = [NOW]

        async def sleep(seconds: float) -> None:
            clock[0] += seconds

        runner = FallbackRunner(
            world.store, world.clients, world.settlement, lambda: clock[0], sleep=sleep,
            pools=world.pools,
        )  # fmt: skip

        line = runner.lines.gate("alpha")
        line.driving = True  # a shared-pool request holds the line's turn meanwhile

        async def attempt(client: ProviderClient) -> str:
            return "answered"

        done = await runner.run(Route("B", (ALPHA,), "m"), attempt, user_id="alice")
        assert (done.value, done.lease.view is not None and done.lease.view.byok) == (
            "answered",
            True,
        )
        assert clock[0] >= NOW + 2.0  # it waited for its own key's reset ...
        assert len(line) == 0  # ... without queueing behind the shared pool's line
