"""Properties of the parsers that read what operators and upstreams send us."""

from __future__ import annotations

import math

from hypothesis import example, given
from hypothesis import strategies as st

from app.config import ConfigError, load_settings, parse_keys
from app.keys.signals import RATE_LIMIT_HEADERS, parse_duration, parse_signal

HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[0-9]{1,400}(\.[0-9]{1,5})?(ms|s|m|h)?\Z"),
    st.sampled_from(["inf", "nan", "-1", "1e400", "1m30s", "Wed, 21 Oct 2099 07:28:00 GMT"]),
)


@given(st.dictionaries(st.sampled_from(RATE_LIMIT_HEADERS), HEADER_VALUES))
def test_rate_limit_headers_never_raise_and_never_cool_forever(headers: dict[str, str]) -> None:
    signal = parse_signal(headers, 1_767_225_600.0)
    for seconds in (signal.retry_after_s, signal.reset_requests_s, signal.reset_tokens_s):
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(st.text(max_size=60))
@example("9" * 400 + "s")  # past float range: inf, which would cool a key forever
def test_a_duration_is_finite_and_not_negative_or_none(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


KEYS = st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12))


@given(KEYS, st.sampled_from([",", " , ", ",,", ",\t"]))
def test_key_lists_are_trimmed_deduplicated_and_ordered(keys: list[str], separator: str) -> None:
    parsed = parse_keys({"GROQ_API_KEYS": separator.join(keys)}, "groq")
    assert parsed == list(dict.fromkeys(keys))


@given(
    st.sampled_from(
        [
            *("MAX_BODY_BYTES", "KEY_GROUPS", "REQUEST_DEADLINE_S", "WS_MAX_INFLIGHT"),
            *("DATABASE_URL", "MAX_STREAMS_PER_USER", "DOCS_ENABLED", "GROQ_RPM_PER_KEY"),
            "GROQ_BASE_URL",
        ]
    ),
    st.text(max_size=30),
)
def test_any_setting_value_starts_or_is_one_clear_configuration_error(
    name: str, value: str
) -> None:
    message = ""
    try:
        load_settings({"GROQ_API_KEYS": "gsk-0123456789abcdef", name: value})
    except ConfigError as exc:
        message = str(exc)
    assert "\n" not in message
