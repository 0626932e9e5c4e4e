"""Prices: built-ins, MODEL_PRICES overrides, provider/model vs bare model, unknown models."""

from __future__ import annotations

import logging

import pytest

from app.access.prices import BUILTIN_PRICES, PriceBook
from app.catalog import CATALOG
from app.config import parse_prices


def test_every_catalog_default_model_has_a_builtin_price():
    for name, entry in CATALOG.items():
        assert f"{name}/{entry.default_model}" in BUILTIN_PRICES


def test_cost_is_tokens_times_price_per_million():
    book = PriceBook.build("fake-small=2/4")
    assert book.cost_usd("fake", "fake-small", 1_000_000, 500_000) == pytest.approx(4.0)
    assert book.cost_usd("openai", "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)


def test_provider_qualified_price_wins_over_the_bare_model():
    book = PriceBook.build("m=1/1,p1/m=10/10")
    assert book.cost_usd("p1", "m", 1_000_000, 0) == pytest.approx(10)
    assert book.cost_usd("p2", "m", 1_000_000, 0) == pytest.approx(1)


def test_overrides_replace_builtins_and_keep_slashes_in_model_ids():
    book = PriceBook.build("openrouter/meta-llama/llama-3.1-8b-instruct=1/2")
    assert book.price("openrouter", "meta-llama/llama-3.1-8b-instruct") == (1.0, 2.0)


def test_unknown_model_costs_zero_and_warns_once(caplog: pytest.LogCaptureFixture):
    book = PriceBook.build(None)
    with caplog.at_level(logging.WARNING, "keypool.access"):
        assert book.cost_usd("x", "mystery", 100, 100) == 0
        assert book.cost_usd("x", "mystery", 100, 100) == 0
    assert sum("mystery" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("raw", ["m", "m=1", "m=a/b", "=1/2", "m=-1/2"])
def test_bad_items_are_refused_with_the_item_named(raw: str):
    with pytest.raises(ValueError, match="MODEL_PRICES"):
        parse_prices(raw)
