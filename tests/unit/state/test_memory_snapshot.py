"""The in-process store's snapshot: a copy the caller may change without touching the pool."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing

from app.keys.model import KeyState, KeyStatus
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.state.memory import MemoryStateStore

NOW = 1_000.0


async def test_changing_a_snapshot_leaves_the_pool_as_it_was():
    pool = KeyPool(2, RoundRobin())
    store = MemoryStateStore({"p": pool})
    snap = await store.snapshot("p", NOW)
    snap.keys[0].state = KeyState.FAILED
    snap.keys[0].tat_requests = 5.0
    assert pool.statuses[0].state is KeyState.ACTIVE
    assert pool.statuses[0].tat_requests == 0.0


def test_a_key_record_holds_scalars_only_so_a_shallow_copy_is_a_deep_one():
    scalars = (int, float, bool, str, type(None), KeyState)
    for field in dataclasses.fields(KeyStatus):
        hint = typing.get_type_hints(KeyStatus)[field.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        assert all(issubclass(p, scalars) or issubclass(p, enum.Enum) for p in parts), field.name
