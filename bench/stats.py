"""Small number helpers shared by the scenarios."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when available (the generators need a cheap event loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(coro)
    return uvloop.run(coro)


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    data = sorted(values)
    if not data:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(data)))
    return data[min(rank, len(data)) - 1]


def rnd(value: float | None, digits: int = 2) -> float | int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(value) if digits == 0 else round(value, digits)


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0 or math.isnan(num) or math.isnan(den):
        return None
    return num / den
