"""Provider and key parsing from a plain mapping, exactly as DESIGN.md §2 describes it."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.catalog import CATALOG
from app.config import ConfigError, fingerprint, load_settings, parse_keys, parse_providers

LONG_A = "sk-alpha-0123456789abcdef"
LONG_B = "sk-bravo-0123456789abcdef"


def keys_of(env: dict[str, str], provider: str = "groq") -> list[str]:
    return parse_keys(env, provider)


class TestKeyLists:
    def test_comma_list_is_trimmed_and_empties_dropped(self):
        assert keys_of({"GROQ_API_KEYS": " k1 , ,k2,,\tk3 ,"}) == ["k1", "k2", "k3"]

    def test_numbered_keys_with_gaps_follow_the_list(self):
        env = {
            "GROQ_API_KEY_7": "k7",
            "GROQ_API_KEY_2": "k2",
            "GROQ_API_KEY": "k1",
            "GROQ_API_KEYS": "a,b",
            "GROQ_API_KEY_100": "k100",
        }
        assert keys_of(env) == ["a", "b", "k1", "k2", "k7", "k100"]

    @pytest.mark.parametrize("var", ["GROQ_API_KEY_1", "GROQ_API_KEY_101", "GROQ_API_KEY_0"])
    def test_numbers_outside_2_to_100_are_not_keys(self, var: str):
        assert keys_of({var: "stray", "GROQ_API_KEY": "k1"}) == ["k1"]

    def test_blank_numbered_keys_are_dropped(self):
        assert keys_of({"GROQ_API_KEY": "  ", "GROQ_API_KEY_3": " k3 "}) == ["k3"]

    def test_duplicates_are_dropped_with_a_warning_that_hides_the_key(
        self, caplog: pytest.LogCaptureFixture
    ):
        env = {"GROQ_API_KEYS": f"{LONG_A},{LONG_B}", "GROQ_API_KEY_5": LONG_A}
        with caplog.at_level(logging.WARNING, logger="keypool.config"):
            assert keys_of(env) == [LONG_A, LONG_B]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        text = warnings[0].getMessage()
        assert "duplicate" in text
        assert "groq" in text
        assert LONG_A not in caplog.text
        assert LONG_A[:-4] not in caplog.text

    def test_keys_of_other_providers_are_not_mixed_in(self):
        env = {"GROQ_API_KEYS": "g1", "GROQCLOUD_API_KEYS": "x1", "XAI_API_KEY": "x2"}
        assert keys_of(env) == ["g1"]


class TestProviders:
    def test_catalog_provider_gets_its_defaults(self):
        [groq] = parse_providers({"GROQ_API_KEYS": "k1,k2"})
        entry = CATALOG["groq"]
        assert groq.base_url == entry.base_url
        assert groq.default_model == entry.default_model
        assert groq.rpm_per_key == entry.rpm_per_key
        assert groq.timeout_s == 60.0
        assert [k.secret for k in groq.keys] == ["k1", "k2"]
        assert groq.key_weights == (1.0, 1.0)

    def test_environment_overrides_the_catalog(self):
        env = {
            "GROQ_API_KEYS": "k1",
            "GROQ_BASE_URL": "http://127.0.0.1:9/v1/",
            "GROQ_DEFAULT_MODEL": "m0",
            "GROQ_MODELS": "m1, m2,",
            "GROQ_RPM_PER_KEY": "7",
            "GROQ_TIMEOUT_S": "2.5",
        }
        [groq] = parse_providers(env)
        assert groq.base_url == "http://127.0.0.1:9/v1"
        assert groq.default_model == "m0"
        assert groq.models == ("m1", "m2")
        assert groq.rpm_per_key == 7
        assert groq.timeout_s == 2.5
        assert groq.serves("m2")
        assert groq.serves("m0")
        assert not groq.serves("m3")

    def test_unknown_provider_is_generic_openai_compatible(self):
        env = {"ACME_API_KEYS": "k", "ACME_BASE_URL": "http://acme/v1", "ACME_DEFAULT_MODEL": "a"}
        [acme] = parse_providers(env)
        assert (acme.name, acme.base_url, acme.default_model) == ("acme", "http://acme/v1", "a")
        assert acme.rpm_per_key is None

    @pytest.mark.parametrize(
        ("extra", "missing"),
        [
            ({"LLM_PROVIDERS": "acme"}, "ACME_BASE_URL"),
            ({"ACME_BASE_URL": "http://acme/v1"}, "ACME_DEFAULT_MODEL"),
        ],
    )
    def test_unknown_provider_without_endpoint_is_one_clear_error(
        self, extra: dict[str, str], missing: str
    ):
        with pytest.raises(ConfigError) as caught:
            load_settings({"ACME_API_KEYS": "k1", **extra})
        message = str(caught.value)
        assert missing in message
        assert "acme" in message
        assert "\n" not in message

    def test_llm_providers_sets_the_order_and_the_selection(self):
        env = {
            "GROQ_API_KEYS": "g",
            "OPENAI_API_KEY": "o",
            "MISTRAL_API_KEY_3": "m",
            "LLM_PROVIDERS": " mistral , Groq",
        }
        assert [p.name for p in load_settings(env).providers] == ["mistral", "groq"]

    def test_without_llm_providers_every_keyed_provider_in_environment_order(self):
        env = {"OPENAI_API_KEY_2": "o", "GROQ_API_KEYS": "g", "XAI_API_KEY": " "}
        assert [p.name for p in load_settings(env).providers] == ["openai", "groq"]

    def test_listed_provider_without_keys_is_skipped_with_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ):
        env = {"GROQ_API_KEYS": "g", "LLM_PROVIDERS": "openai,groq"}
        with caplog.at_level(logging.WARNING, logger="keypool.config"):
            providers = load_settings(env).providers
        assert [p.name for p in providers] == ["groq"]
        assert "openai" in caplog.text

    @pytest.mark.parametrize(
        "env", [{}, {"GROQ_API_KEYS": " , "}, {"LLM_PROVIDERS": "groq", "OPENAI_API_KEY": "o"}]
    )
    def test_no_provider_at_all_stops_start_up(self, env: dict[str, str]):
        with pytest.raises(ConfigError, match="no LLM provider configured"):
            load_settings(env)

    @pytest.mark.parametrize(
        ("env", "var"),
        [
            ({"MAX_MESSAGE_CHARS": "many"}, "MAX_MESSAGE_CHARS"),
            ({"KEY_SELECTION": "fastest"}, "KEY_SELECTION"),
            ({"GROQ_RPM_PER_KEY": "-1"}, "GROQ_RPM_PER_KEY"),
            ({"GROQ_TIMEOUT_S": "soon"}, "GROQ_TIMEOUT_S"),
            ({"GROQ_KEY_WEIGHTS": "1,x"}, "GROQ_KEY_WEIGHTS"),
        ],
    )
    def test_bad_values_name_their_variable(self, env: dict[str, str], var: str):
        with pytest.raises(ConfigError, match=var):
            load_settings({"GROQ_API_KEYS": "g1,g2", **env})


class TestSettings:
    def test_process_settings_come_from_the_same_mapping(self):
        env = {
            "GROQ_API_KEYS": "a,b,c",
            "OPENAI_API_KEY": "o",
            "MAX_MESSAGE_CHARS": "120",
            "PROVIDER_ROTATION": "priority",
            "ADMIN_TOKEN": "admin-token-value-123",
        }
        settings = load_settings(env)
        assert settings.max_message_chars == 120
        assert settings.provider_rotation == "priority"
        assert settings.groups == 3  # KEY_GROUPS defaults to the largest key count
        assert settings.admin_token is not None
        assert "admin-token-value-123" not in repr(settings)

    def test_key_groups_overrides_the_default(self):
        assert load_settings({"GROQ_API_KEYS": "a,b", "KEY_GROUPS": "7"}).groups == 7


class TestFingerprints:
    def test_long_keys_show_provider_index_and_last_four(self):
        assert fingerprint("groq", 2, LONG_A) == "groq:2:cdef"

    def test_reprs_show_fingerprints_only(self):
        [groq] = parse_providers({"GROQ_API_KEYS": f"{LONG_A},short-key"})
        text = repr(groq) + str(groq.keys) + repr(list(groq.keys))
        assert LONG_A not in text
        assert "short-key" not in text
        assert "groq:0:cdef" in text

    @given(
        provider=st.sampled_from(["groq", "openai", "acme", "x"]),
        index=st.integers(0, 99),
        key=st.text(st.characters(categories=["L", "N"]) | st.sampled_from("-_."), min_size=6),
    )
    def test_a_fingerprint_never_contains_the_key(self, provider: str, index: int, key: str):
        assert key not in fingerprint(provider, index, key)
