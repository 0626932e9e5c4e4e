"""Key selection strategies: each picks one index from the usable candidates, nothing else."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from app.keys.model import KeyStatus


class Strategy(Protocol):
    """Picks one of `candidates` (non-empty, usable, index order); `cursor` is the rotation point."""

    name: str

    def pick(
        self,
        candidates: Sequence[int],
        statuses: Sequence[KeyStatus],
        cursor: int,
        rng: random.Random,
    ) -> int: ...


def _next_in_rotation(candidates: Sequence[int], cursor: int) -> int:
    for index in candidates:
        if index >= cursor:
            return index
    return candidates[0]


class RoundRobin:
    name = "round_robin"

    def pick(
        self,
        candidates: Sequence[int],
        statuses: Sequence[KeyStatus],
        cursor: int,
        rng: random.Random,
    ) -> int:
        return _next_in_rotation(candidates, cursor)


class RandomChoice:
    name = "random"

    def pick(
        self,
        candidates: Sequence[int],
        statuses: Sequence[KeyStatus],
        cursor: int,
        rng: random.Random,
    ) -> int:
        return rng.choice(candidates)


class Weighted:
    """Configured weights scaled by each key's recent health (lowered by failures, restored by successes)."""

    name = "weighted"

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = tuple(weights)

    def pick(
        self,
        candidates: Sequence[int],
        statuses: Sequence[KeyStatus],
        cursor: int,
        rng: random.Random,
    ) -> int:
        scores = [self._weight(i) * statuses[i].health_factor for i in candidates]
        if sum(scores) <= 0:
            return _next_in_rotation(candidates, cursor)
        return rng.choices(candidates, weights=scores)[0]

    def _weight(self, index: int) -> float:
        return self.weights[index] if index < len(self.weights) else 1.0


class LeastBusy:
    """Fewest in-flight requests; ties broken in rotation order so idle pools still spread load."""

    name = "least_busy"

    def pick(
        self,
        candidates: Sequence[int],
        statuses: Sequence[KeyStatus],
        cursor: int,
        rng: random.Random,
    ) -> int:
        fewest = min(statuses[i].in_flight for i in candidates)
        return _next_in_rotation([i for i in candidates if statuses[i].in_flight == fewest], cursor)


def make_strategy(name: str, weights: Sequence[float] = ()) -> Strategy:
    factories: dict[str, Strategy] = {
        "round_robin": RoundRobin(),
        "random": RandomChoice(),
        "weighted": Weighted(weights),
        "least_busy": LeastBusy(),
    }
    try:
        return factories[name]
    except KeyError:
        raise ValueError(f"unknown key selection strategy {name!r}") from None
