"""Usage accounting as the tests expect it: from chat answers, from the fake, from the DB."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.demo.fake_provider import FakeProviderThread
from tests.support.databases import StatsRow, stats_rows

RowKey = tuple[str, int, int | None]
COUNTERS = (
    "total_requests",
    "errors",
    "rate_limited",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
)


def expected_rows(
    answers: Iterable[tuple[int | None, Mapping[str, Any]]],
) -> dict[RowKey, Counter[str]]:
    """``(key group, /api/chat 200 body)`` pairs → the ``api_key_stats`` rows they imply.

    Each failed try listed in ``attempts`` is one request and one error (a 429 also one
    rate-limited); the answer itself is one request carrying the reported tokens.
    """
    rows: dict[RowKey, Counter[str]] = defaultdict(Counter)
    for group, body in answers:
        for attempt in body["attempts"]:
            tally = rows[(attempt["provider"], attempt["key_index"], group)]
            tally.update(total_requests=1, errors=1, rate_limited=attempt["status"] == 429)
        tally = rows[(body["provider"], body["key_index"], group)]
        tally.update(total_requests=1, **body["usage"])
    return {key: _complete(tally) for key, tally in rows.items()}


def stored_rows(rows: Sequence[StatsRow]) -> dict[RowKey, Counter[str]]:
    """The DB rows in the same shape (one row per key and group by construction)."""
    return {
        (r["provider"], r["key_index"], r["key_group"]): _complete(
            Counter({name: r[name] for name in COUNTERS})
        )
        for r in rows
    }


def per_key(rows: Mapping[RowKey, Counter[str]]) -> dict[tuple[str, int], Counter[str]]:
    """Rows summed over key groups: what one key did for everybody."""
    keys: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    for (provider, key_index, _group), tally in rows.items():
        keys[(provider, key_index)].update(tally)
    return {key: _complete(tally) for key, tally in keys.items()}


def fake_counts(
    provider: str, fake: FakeProviderThread, keys: Sequence[str]
) -> dict[tuple[str, int], dict[str, int]]:
    """The fake provider's own view of each key: requests, errors (non-200), 429s."""
    stats = fake.stats()["keys"]
    counts = {}
    for index, key in enumerate(keys):
        entry = stats.get(key, {"requests": 0, "status": {}})
        status = Counter(entry["status"])
        counts[(provider, index)] = {
            "total_requests": entry["requests"],
            "errors": entry["requests"] - status["200"],
            "rate_limited": status["429"],
        }
    return counts


def _complete(tally: Counter[str]) -> Counter[str]:
    """Every counter present (zeros included), so dict equality compares them all."""
    return Counter({name: int(tally[name]) for name in COUNTERS})


def settled_stats(
    url: str, expected: Mapping[RowKey, Counter[str]], timeout: float = 10.0
) -> list[StatsRow]:
    """Poll ``api_key_stats`` (written in the background) until it holds ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        rows = stats_rows(url)
        if stored_rows(rows) == expected or time.monotonic() > deadline:
            assert stored_rows(rows) == expected, f"api_key_stats not as expected in {timeout}s"
            return rows
        time.sleep(0.02)
