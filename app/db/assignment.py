"""Pure key-group arithmetic: least-loaded choice, a stable rebalance plan, an LRU cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


def least_loaded(sizes: Mapping[int, int], groups: int) -> int:
    """The group in 1..``groups`` with the fewest users; ties go to the lowest number."""
    return min(range(1, groups + 1), key=lambda g: (sizes.get(g, 0), g))


@dataclass(frozen=True, slots=True)
class RebalancePlan:
    """Where users must move (only those that move) and the resulting group sizes."""

    moves: dict[str, int]
    sizes: dict[int, int]


def plan_rebalance(users: Sequence[tuple[str, int]], groups: int) -> RebalancePlan:
    """Even out ``users`` (``(user_id, group)``, oldest first) over 1..``groups``.

    Sizes end within one of each other, and the fewest possible users move: the extra
    seats go to the groups that are already largest, each group keeps its oldest
    members, and users of a group above ``groups`` always move.
    """
    members: dict[int, list[str]] = {g: [] for g in range(1, groups + 1)}
    movers: list[str] = []
    for user_id, group in users:
        members.get(group, movers).append(user_id)
    caps = _capacities(len(users), {g: len(m) for g, m in members.items()})
    for group, ids in members.items():
        movers.extend(ids[caps[group] :])
    moves: dict[str, int] = {}
    queue = iter(movers)
    for group, ids in members.items():
        for _ in range(caps[group] - min(len(ids), caps[group])):
            moves[next(queue)] = group
    return RebalancePlan(moves=moves, sizes=caps)


def _capacities(total: int, current: Mapping[int, int]) -> dict[int, int]:
    base, extra = divmod(total, len(current))
    largest_first = sorted(current, key=lambda g: (-current[g], g))
    bigger = set(largest_first[:extra])
    return {g: base + (1 if g in bigger else 0) for g in current}


class LruCache(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry when full."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._max:
            self._data.popitem(last=False)

    def replace_if_present(self, key: K, value: V) -> None:
        """Update an entry without making it recent or adding it."""
        if key in self._data:
            self._data[key] = value
