"""`<P>_BURST_PER_KEY`: read per provider, default 1 (every start spaced), bad values named."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings, parse_providers
from app.state.build import build_pools

ENV = {
    "GROQ_API_KEYS": "k1",
    "GROQ_BASE_URL": "http://127.0.0.1:9/v1",
    "GROQ_DEFAULT_MODEL": "m0",
    "GROQ_RPM_PER_KEY": "30",
}


def test_the_burst_defaults_to_one_and_is_read_per_provider():
    [plain] = parse_providers(ENV)
    [bursty] = parse_providers({**ENV, "GROQ_BURST_PER_KEY": "3"})
    assert (plain.burst_per_key, bursty.burst_per_key) == (1, 3)


def test_bad_bursts_name_their_variable():
    with pytest.raises(ConfigError, match="GROQ_BURST_PER_KEY"):
        parse_providers({**ENV, "GROQ_BURST_PER_KEY": "lots"})


def test_the_pool_paces_with_the_configured_burst():
    settings = load_settings({**ENV, "GROQ_BURST_PER_KEY": "3"})
    pace = build_pools(settings)["groq"].pace
    assert (pace.rpm, pace.burst) == (30, 3)
