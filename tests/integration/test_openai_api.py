"""/v1 through the official `openai` SDK, unchanged: completions, models and OpenAI error shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from app.demo.fake_provider import FakeProviderConfig, FakeProviderThread, KeyBehaviour
from tests.support.servers import GatewayServer, provider_env

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
CONTENT = "w0 w1 w2 w3 w4 "


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One gateway for the module: every test here leaves the pool as it found it, or worse only
    for the `limited` and `down` providers, which exist to fail."""
    keys: dict[str, dict[str, dict[str, Any]]] = {
        "alpha": {"a0": {}, "a1": {}},
        "beta": {"b0": {}},
        "limited": {"l0": {"mode": "rate_limited", "retry_after_s": 30.0}},
        "down": {"d0": {"mode": "error_500"}},
    }
    fakes = {name: start_fake(k) for name, k in keys.items()}
    env = {"LLM_PROVIDERS": ",".join(keys)}
    for name, fake in fakes.items():
        extra = {"models": "fake-large"} if name == "beta" else {}
        env.update(provider_env(name, fake, list(keys[name]), **extra))
    server = GatewayServer(env, tmp_path_factory.mktemp("openai")).start()
    yield server
    server.stop()
    for fake in fakes.values():
        fake.stop()


def start_fake(keys: dict[str, dict[str, Any]]) -> FakeProviderThread:
    behaviours = {k: KeyBehaviour().with_changes(v) for k, v in keys.items()}
    return FakeProviderThread(FakeProviderConfig(keys=behaviours)).start()


@pytest.fixture
def sdk(gateway: GatewayServer) -> Iterator[OpenAI]:
    # max_retries=0 only so error tests do not wait out the SDK's own backoff.
    with OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0) as client:
        yield client


class TestCompletions:
    def test_auto_is_path_a(self, sdk: OpenAI):
        raw = sdk.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
        completion = raw.parse()
        assert completion.object == "chat.completion"
        assert completion.choices[0].message.content == CONTENT
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.total_tokens == (
            completion.usage.prompt_tokens + completion.usage.completion_tokens
        )
        assert raw.headers["x-keypool-provider"] in {"alpha", "beta"}
        assert raw.headers["x-keypool-key-index"].isdigit()

    @pytest.mark.parametrize("model", ["beta/fake-large", "fake-large"])
    def test_a_named_model_is_path_b(self, sdk: OpenAI, model: str):
        raw = sdk.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, temperature=0.2, max_tokens=3, user="u-1"
        )
        completion = raw.parse()
        assert raw.headers["x-keypool-provider"] == "beta"
        assert completion.model == "fake-large"
        assert completion.choices[0].message.content == "w0 w1 w2 "
        assert completion.choices[0].finish_reason == "length"

    async def test_async_client(self, gateway: GatewayServer):
        base_url = f"{gateway.base_url}/v1"
        async with AsyncOpenAI(base_url=base_url, api_key="unused") as client:
            auto = await client.chat.completions.create(model="auto", messages=MESSAGES)
            named = await client.chat.completions.create(
                model="alpha/fake-small", messages=MESSAGES
            )
            models = [m.id async for m in client.models.list()]
        assert auto.choices[0].message.content == CONTENT
        assert named.choices[0].message.content == CONTENT
        assert "auto" in models

    def test_models_list(self, sdk: OpenAI):
        models = list(sdk.models.list())
        assert [m.id for m in models] == [
            "auto",
            "alpha/fake-small",
            "beta/fake-small",
            "beta/fake-large",
            "limited/fake-small",
            "down/fake-small",
        ]
        assert all(m.object == "model" for m in models)
        assert models[2].owned_by == "beta"

    def test_models_retrieve(self, sdk: OpenAI):
        assert sdk.models.retrieve("beta/fake-large").owned_by == "beta"
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.models.retrieve("beta/nope")
        assert missing.value.code == "model_not_found"

    def test_a_user_longer_than_a_stored_id_is_accepted(self, sdk: OpenAI):
        answer = sdk.chat.completions.create(
            model="alpha/fake-small", messages=MESSAGES, user="u" * 1000
        )
        assert answer.choices[0].message.content == CONTENT


class TestErrors:
    def test_validation_is_400_invalid_request_error_with_param(self, sdk: OpenAI):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="auto", messages=MESSAGES, temperature=3)
        error = caught.value
        assert error.status_code == 400
        assert (error.type, error.code, error.param) == (
            "invalid_request_error",
            "invalid_request",
            "temperature",
        )

    @pytest.mark.parametrize(
        ("messages", "param"),
        [
            ([{"role": "user", "content": 5}], "messages.0.content"),
            ([{"role": "robot", "content": "x"}], "messages.0.role"),
            ([], "messages"),
        ],
    )
    def test_param_names_the_nested_field(self, sdk: OpenAI, messages: Any, param: str):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="auto", messages=messages)
        assert caught.value.param == param

    def test_unknown_model_is_400(self, sdk: OpenAI):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="ghost-model", messages=MESSAGES)
        assert caught.value.code == "unknown_model"
        assert caught.value.type == "invalid_request_error"

    def test_model_the_upstream_does_not_know_is_404(self, sdk: OpenAI):
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.chat.completions.create(model="alpha/ghost-model", messages=MESSAGES)
        assert (caught.value.type, caught.value.code) == (
            "invalid_request_error",
            "model_not_found",
        )

    def test_all_rate_limited_is_the_sdk_rate_limit_error(self, sdk: OpenAI):
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model="limited/fake-small", messages=MESSAGES)
        assert caught.value.type == "rate_limit_error"
        assert caught.value.code == "rate_limited"
        assert 1 <= int(caught.value.response.headers["retry-after"]) <= 30

    def test_exhausted_is_503_api_error(self, sdk: OpenAI):
        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="down/fake-small", messages=MESSAGES)
        assert caught.value.status_code == 503
        assert (caught.value.type, caught.value.code) == ("api_error", "all_keys_failed")

    def test_unknown_route_is_an_openai_shaped_404(self, gateway: GatewayServer):
        answer = httpx.get(f"{gateway.base_url}/v1/embeddings")
        assert answer.status_code in {404, 405}
        error = answer.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
