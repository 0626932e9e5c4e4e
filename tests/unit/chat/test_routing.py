"""Path A / Path B resolution: explicit provider, `prefix/model`, `<P>_MODELS`, else unknown."""

from __future__ import annotations

import pytest

from app.chat.routing import resolve_route
from app.config import ApiKey, ProviderConfig
from app.errors import UnknownModel, UnknownProvider


def provider(name: str, default: str, *models: str) -> ProviderConfig:
    key = ApiKey("secret", f"{name}:0:hash")
    return ProviderConfig(name, f"http://{name}/v1", default, (key,), tuple(models))


ALPHA = provider("alpha", "a-default", "shared", "meta-llama/llama-3-8b")
BETA = provider("beta", "b-default", "shared", "beta-only", "alpha/odd-id")
PROVIDERS = (ALPHA, BETA)


def names(route_providers: tuple[ProviderConfig, ...]) -> list[str]:
    return [p.name for p in route_providers]


class TestPathA:
    def test_no_model_uses_every_provider_in_order(self):
        route = resolve_route(PROVIDERS, None, None)
        assert route.path == "A"
        assert names(route.providers) == ["alpha", "beta"]
        assert [route.model_for(p) for p in route.providers] == ["a-default", "b-default"]

    @pytest.mark.parametrize("given", ["beta", "BETA"])
    def test_provider_restricts_path_a(self, given: str):
        route = resolve_route(PROVIDERS, None, given)
        assert (route.path, names(route.providers), route.model) == ("A", ["beta"], None)

    def test_unknown_provider_is_refused_with_the_configured_ones(self):
        with pytest.raises(UnknownProvider) as caught:
            resolve_route(PROVIDERS, None, "gamma")
        assert caught.value.status_code == 400
        assert caught.value.type == "unknown_provider"
        assert caught.value.details["available"] == ["alpha", "beta"]


class TestPathB:
    @pytest.mark.parametrize(
        ("model", "given", "expected_provider", "expected_model"),
        [
            # 1. an explicit provider wins, and the model is passed on whole
            ("anything", "beta", "beta", "anything"),
            ("alpha/x", "beta", "beta", "alpha/x"),
            # 2. a prefix naming a configured provider; the rest is the model
            ("beta/fake-large", None, "beta", "fake-large"),
            ("BETA/Model-X", None, "beta", "Model-X"),
            ("alpha/odd-id", None, "alpha", "odd-id"),  # prefix beats beta's listing
            # 3. the first provider (LLM_PROVIDERS order) whose default or MODELS has it
            ("a-default", None, "alpha", "a-default"),
            ("b-default", None, "beta", "b-default"),
            ("shared", None, "alpha", "shared"),
            ("beta-only", None, "beta", "beta-only"),
            ("meta-llama/llama-3-8b", None, "alpha", "meta-llama/llama-3-8b"),
        ],
    )
    def test_routing_rules_in_order(
        self, model: str, given: str | None, expected_provider: str, expected_model: str
    ):
        route = resolve_route(PROVIDERS, model, given)
        assert route.path == "B"
        assert names(route.providers) == [expected_provider]
        assert route.model == expected_model
        assert route.model_for(route.providers[0]) == expected_model

    def test_listing_order_follows_llm_providers(self):
        route = resolve_route((BETA, ALPHA), "shared", None)
        assert names(route.providers) == ["beta"]

    @pytest.mark.parametrize("model", ["ghost", "gamma/ghost", "alpha/", "meta-llama/other"])
    def test_unknown_model_is_a_400_naming_it(self, model: str):
        with pytest.raises(UnknownModel) as caught:
            resolve_route(PROVIDERS, model, None)
        assert caught.value.status_code == 400
        assert caught.value.type == "unknown_model"
        assert caught.value.details == {"model": model}
        assert "alpha/" in caught.value.message  # tells how to name a provider

    def test_unknown_provider_with_a_model_is_still_unknown_provider(self):
        with pytest.raises(UnknownProvider):
            resolve_route(PROVIDERS, "a-default", "gamma")
