"""Private pools for users' own keys: theirs only, their own cooldowns, rebuilt when keys change."""

from __future__ import annotations

from typing import cast

from app.config import ApiKey, ProviderConfig
from app.keys.model import Ask, Outcome, RateLimitSignal, Release
from app.providers.transport import Transport, UpstreamResponse, UpstreamStream
from app.vault.byok import ByokPools

GROQ = ProviderConfig(
    "groq", "http://127.0.0.1:9/v1", "m", (ApiKey("sk-shared-000000001", "groq:0:0001"),)
)
OWN: dict[tuple[str, str], tuple[ApiKey, ...]] = {
    ("alice", "groq"): (ApiKey("sk-alice-0000000042", "groq:byok:0042"),)
}


class NoTransport:
    async def request(self, *args: object) -> UpstreamResponse:
        raise AssertionError("not called")

    async def open_stream(self, *args: object) -> UpstreamStream:
        raise AssertionError("not called")

    async def aclose(self) -> None:
        return None


def pools(own: dict[tuple[str, str], tuple[ApiKey, ...]] = OWN) -> ByokPools:
    return ByokPools(
        {"groq": GROQ}, lambda u, p: own.get((u, p), ()), cast(Transport, NoTransport())
    )


class TestByokPools:
    def test_a_user_with_an_own_key_gets_a_pool_of_just_that_key(self):
        pool = pools().get("alice", "groq")
        assert pool is not None
        assert [k.secret for k in pool.config.keys] == ["sk-alice-0000000042"]
        assert pool.client(0, "other-model").key.fingerprint == "groq:byok:0042"
        assert pool.client(0, "other-model").model == "other-model"

    def test_everyone_else_uses_the_shared_pool(self):
        registry = pools()
        assert registry.get("bob", "groq") is None
        assert registry.get(None, "groq") is None
        assert registry.get("alice", "openai") is None

    async def test_cooldowns_are_the_users_own(self):
        registry = pools()
        pool = registry.get("alice", "groq")
        assert pool is not None
        grant = await pool.store.acquire("groq", 100.0, Ask())
        assert grant.index == 0
        await pool.store.release(
            Release("groq", 0, Outcome.RATE_LIMITED, 100.0, RateLimitSignal(retry_after_s=30))
        )
        again = await pool.store.acquire("groq", 101.0, Ask())
        assert (again.index, again.refused) == (None, "rate_limited")
        assert registry.get("alice", "groq") is pool  # kept between requests

    def test_a_changed_key_rebuilds_the_pool(self):
        own = dict(OWN)
        registry = pools(own)
        before = registry.get("alice", "groq")
        own[("alice", "groq")] = (ApiKey("sk-alice-new-0000099", "groq:byok:0099"),)
        registry.forget("alice", "groq")
        after = registry.get("alice", "groq")
        assert after is not None
        assert after is not before
        assert after.config.keys[0].secret == "sk-alice-new-0000099"
