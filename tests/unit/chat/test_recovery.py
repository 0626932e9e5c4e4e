"""KeyProber: a probe's answer moves a key's state; probes never count as requests."""

from __future__ import annotations

import pytest

from app.chat.clients import ClientCache
from app.chat.recovery import KeyProber
from app.config import load_settings
from app.keys.model import KeyState
from app.state.build import build_store
from app.state.memory import MemoryStateStore
from tests.support.answering import AnsweringTransport

T0 = 1_000.0


def prober_over(answers: dict[str, int]) -> tuple[KeyProber, MemoryStateStore, AnsweringTransport]:
    settings = load_settings(
        {
            "ALPHA_API_KEYS": ",".join(answers),
            "ALPHA_BASE_URL": "http://alpha.invalid/v1",
            "ALPHA_DEFAULT_MODEL": "m",
        }
    )
    transport = AnsweringTransport({k: (status, {"data": []}) for k, status in answers.items()})
    store = build_store(settings)
    assert isinstance(store, MemoryStateStore)
    clients = ClientCache(settings.providers, transport)
    return KeyProber(settings.providers, store, clients, clock=lambda: T0), store, transport


class TestProbe:
    async def test_probe_all_asks_every_key_for_its_models(self):
        prober, store, transport = prober_over({"k0": 200, "k1": 200})
        results = await prober.probe_all()
        assert [(r.key_index, r.ok, r.status) for r in results] == [(0, True, 200), (1, True, 200)]
        assert {url for _, url, _ in transport.requests} == {"http://alpha.invalid/v1/models"}
        assert [s.requests for s in store.pools["alpha"].statuses] == [0, 0]

    async def test_a_rejected_key_is_marked_failed(self):
        prober, store, _ = prober_over({"k0": 401})
        [result] = await prober.probe_all()
        assert (result.ok, result.status, result.state) == (False, 401, KeyState.FAILED)
        assert result.as_dict()["fingerprint"] != "k0"
        assert store.pools["alpha"].statuses[0].state is KeyState.FAILED

    async def test_a_failed_key_that_answers_again_is_active(self):
        prober, store, _ = prober_over({"k0": 200})
        store.pools["alpha"].statuses[0].state = KeyState.FAILED
        [result] = await prober.probe_all()
        assert result.state is KeyState.ACTIVE

    async def test_a_round_probes_only_the_keys_that_need_it(self):
        prober, store, transport = prober_over({"k0": 200, "k1": 200})
        store.pools["alpha"].statuses[1].state = KeyState.FAILED
        results, _ = await prober.probe_round()
        assert [r.key_index for r in results] == [1]
        assert [key for _, _, key in transport.requests] == ["k1"]

    @pytest.mark.parametrize("min_active", [1, 2])
    async def test_a_round_turns_eager_when_a_provider_is_short_of_keys(self, min_active: int):
        prober, store, _ = prober_over({"k0": 200, "k1": 200})
        prober.min_active_keys = min_active
        store.pools["alpha"].statuses[1].state = KeyState.DISABLED
        _, eager = await prober.probe_round()
        assert eager is (min_active == 2)
