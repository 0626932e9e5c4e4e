"""MODEL_GROUPS, TIER_WEIGHTS and <P>_SHARED_LIMIT parsing, and group routing."""

from __future__ import annotations

import pytest

from app.chat.routing import resolve_route
from app.config import ApiKey, ConfigError, ProviderConfig, load_settings
from app.model_groups import GroupMember

BASE = {
    "ALPHA_API_KEYS": "a0",
    "ALPHA_BASE_URL": "http://alpha/v1",
    "ALPHA_DEFAULT_MODEL": "a-default",
    "BETA_API_KEYS": "b0",
    "BETA_BASE_URL": "http://beta/v1",
    "BETA_DEFAULT_MODEL": "b-default",
}


def settings(**extra: str):
    return load_settings({**BASE, **extra})


class TestModelGroups:
    def test_groups_parse_in_member_order(self):
        s = settings(MODEL_GROUPS=" smart = beta/big , alpha/meta-llama/x ; cheap=alpha/small ;")
        assert list(s.groups_by_name) == ["smart", "cheap"]
        assert s.groups_by_name["smart"].members == (
            GroupMember("beta", "big"),
            GroupMember("alpha", "meta-llama/x"),
        )

    def test_unset_means_no_groups(self):
        assert settings().groups_by_name == {}

    def test_unconfigured_provider_is_one_line_config_error(self):
        with pytest.raises(ConfigError) as caught:
            settings(MODEL_GROUPS="smart=alpha/x,gamma/y")
        message = str(caught.value)
        assert "gamma" in message
        assert "smart" in message
        assert "\n" not in message

    @pytest.mark.parametrize(
        "raw",
        [
            "smart",
            "=alpha/x",
            "smart=",
            "smart=alpha",
            "smart=/x",
            "smart=alpha/",
            "smart=alpha/x;smart=beta/y",
            "auto=alpha/x",
            "smart=alpha/x,alpha/y",
        ],
    )
    def test_garbled_groups_stop_start_up(self, raw: str):
        with pytest.raises(ConfigError, match="MODEL_GROUPS"):
            settings(MODEL_GROUPS=raw)


class TestSchedulingSettings:
    def test_defaults(self):
        s = settings()
        assert s.fair_queueing is True
        assert s.tier_weight_map == {"free": 1.0, "pro": 2.0, "enterprise": 4.0}
        assert [p.shared_limit for p in s.providers] == ["auto", "auto"]

    def test_values_are_read(self):
        s = settings(
            FAIR_QUEUEING="false",
            TIER_WEIGHTS="free:1, Gold:2.5",
            ALPHA_SHARED_LIMIT="TRUE",
            BETA_SHARED_LIMIT="false",
        )
        assert s.fair_queueing is False
        assert s.tier_weight_map == {"free": 1.0, "gold": 2.5}
        assert [p.shared_limit for p in s.providers] == ["true", "false"]

    @pytest.mark.parametrize("raw", ["free", "free:0", "free:-1", "free:x", ":2", "free:nan"])
    def test_bad_tier_weights_stop_start_up(self, raw: str):
        with pytest.raises(ConfigError, match="TIER_WEIGHTS"):
            settings(TIER_WEIGHTS=raw)

    def test_bad_shared_limit_names_its_variable(self):
        with pytest.raises(ConfigError, match="ALPHA_SHARED_LIMIT"):
            settings(ALPHA_SHARED_LIMIT="sometimes")


def provider(name: str, default: str, *models: str) -> ProviderConfig:
    return ProviderConfig(name, f"http://{name}/v1", default, (ApiKey("s", f"{name}:0:x"),), models)


ALPHA = provider("alpha", "a-default", "smart")
BETA = provider("beta", "b-default")
GROUPS = settings(MODEL_GROUPS="smart=beta/big,alpha/small").groups_by_name


class TestGroupRouting:
    def test_group_name_beats_a_provider_listing_the_same_model(self):
        route = resolve_route((ALPHA, BETA), "smart", None, GROUPS)
        assert (route.path, route.group, route.spans_providers) == ("B", "smart", True)
        assert [p.name for p in route.providers] == ["beta", "alpha"]
        assert [route.model_for(p) for p in route.providers] == ["big", "small"]

    def test_without_groups_the_name_is_a_plain_model(self):
        route = resolve_route((ALPHA, BETA), "smart", None)
        assert (route.group, [p.name for p in route.providers]) == (None, ["alpha"])
        assert route.spans_providers is False

    def test_a_named_member_provider_narrows_the_group(self):
        route = resolve_route((ALPHA, BETA), "smart", "ALPHA", GROUPS)
        assert ([p.name for p in route.providers], route.model_for(ALPHA)) == (["alpha"], "small")
        assert route.group == "smart"

    def test_path_a_spans_providers(self):
        assert resolve_route((ALPHA, BETA), None, None, GROUPS).spans_providers
