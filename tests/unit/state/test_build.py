"""Which store a configuration gets, and the 1/N budget share of workers that cannot see each other."""

from __future__ import annotations

import logging
import random

import pytest

from app.config import ConfigError, load_settings
from app.keys.model import Ask
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.state.build import build_store
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore

ENV = {
    "ALPHA_API_KEYS": "k0,k1",
    "ALPHA_BASE_URL": "http://127.0.0.1:9/v1",
    "ALPHA_DEFAULT_MODEL": "m",
    "ALPHA_RPM_PER_KEY": "600",
}
T0 = 1_000.0


def starts(pool: KeyPool, n: int) -> list[float]:
    """When `n` requests asked at once on key 0 would start."""
    ask = Ask(preferred=0, exclude={1}, reserve=True, max_queue_s=10)
    return [pool.acquire(T0, random.Random(0), ask).delay_s for _ in range(n)]


class TestShare:
    def test_a_shared_budget_spaces_each_process_n_times_wider(self):
        alone = KeyPool(2, RoundRobin(), pace=Pace(rpm=600))
        one_of_three = KeyPool(2, RoundRobin(), pace=Pace(rpm=600).shared_by(3))
        gap = 0.1 * (1 + REQUEST_HEADROOM)
        assert starts(alone, 3) == pytest.approx([0, gap, 2 * gap])
        assert starts(one_of_three, 3) == pytest.approx([0, 3 * gap, 6 * gap])

    def test_a_token_budget_is_shared_too(self):
        pace = Pace(tpm=6_000)
        assert pace.shared_by(2).token_burst == pace.token_burst / 2
        assert pace.shared_by(2).token_interval == pytest.approx(2 * pace.token_interval)


class TestBuildStore:
    def test_without_redis_one_worker_keeps_the_whole_budget(self):
        store = build_store(load_settings(ENV))
        assert isinstance(store, MemoryStateStore)
        assert store.pools["alpha"].pace.share == 1

    def test_without_redis_each_of_n_workers_keeps_to_its_share_and_says_so(
        self, caplog: pytest.LogCaptureFixture
    ):
        caplog.set_level(logging.INFO, logger="keypool")
        store = build_store(load_settings({**ENV, "WEB_CONCURRENCY": "4"}))
        assert isinstance(store, MemoryStateStore)
        assert store.pools["alpha"].pace.share == 4
        assert [r.getMessage() for r in caplog.records if "1/4" in r.getMessage()]

    async def test_with_redis_the_store_is_shared_with_a_local_fallback(self):
        settings = load_settings({**ENV, "REDIS_URL": "redis://127.0.0.1:6379/0"})
        store = build_store(settings)
        assert isinstance(store, DegradingStore)
        assert store.redis_status() == "down"  # until started
        await store.aclose()

    def test_a_malformed_redis_url_stops_start_up_with_one_clear_message(self):
        with pytest.raises(ConfigError, match="REDIS_URL") as raised:
            load_settings({**ENV, "REDIS_URL": "user:secret@localhost:6379"})
        assert "secret" not in str(raised.value)
