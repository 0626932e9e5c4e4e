"""Dependency direction, for every folder of `app/`: each may import only the rooms below it.

    main, cli ──► runtime ──► api ──► chat ──► providers ──► keys (pure)
                                 │        ├──► state ─────► keys
                                 │        └──► usage, config, errors
                                 ├──► access ──► db, state, config, errors
                                 ├──► db ──► usage, errors, timefmt
                                 ├──► vault ──► providers, state, db, keys   (cache ──► state)
                                 └──► observability ──► chat, providers, state, db, metrics
    api and runtime also use cache (the response cache in front of the non-streaming routes)

`app/keys` is pure (no I/O library, no clock, no other room), and aiohttp is imported only by
`app/providers/transport.py` (and the demo's fake provider).
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
IO_LIBRARIES = {"fastapi", "starlette", "httpx", "aiohttp", "sqlalchemy", "redis"}
CLOCK_AND_SLEEP = {("time", "time"), ("asyncio", "sleep")}


def imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def impurities(source: str) -> list[str]:
    tree = ast.parse(source)
    found = [n for n in imported(tree) if n.split(".")[0] in IO_LIBRARIES]
    found += [n for n in imported(tree) if n.startswith("app.") and not n.startswith("app.keys")]
    found += [f"{m}.{n}" for m, n in CLOCK_AND_SLEEP if f"{m}.{n}" in imported(tree)]
    attributes = (n for n in ast.walk(tree) if isinstance(n, ast.Attribute))
    found += [
        f"{a.value.id}.{a.attr}"
        for a in attributes
        if isinstance(a.value, ast.Name) and (a.value.id, a.attr) in CLOCK_AND_SLEEP
    ]
    return found


def test_keys_is_pure():
    found = {p.name: impurities(p.read_text()) for p in sorted((APP / "keys").glob("*.py"))}
    assert found, "app/keys has no modules?"
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_aiohttp_lives_only_in_the_transport_and_the_demo():
    allowed = (APP / "providers" / "transport.py", APP / "demo")
    users = [
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if not any(path.is_relative_to(root) for root in allowed)
        and any(n.split(".")[0] == "aiohttp" for n in imported(ast.parse(path.read_text())))
    ]
    assert users == []


# The rooms each room of app/ may import (a room: a folder, or a top-level module).
BASE = {"config", "provider_env", "errors", "usage", "timefmt", "catalog", "model_groups"}
ALLOWED: dict[str, set[str]] = {
    "keys": set(),
    "catalog": set(),
    "model_groups": set(),
    "errors": set(),
    "usage": set(),
    "timefmt": set(),
    "serving": set(),  # uvicorn's options for `keypool serve` and the demo
    "schemas": {"errors"},
    "provider_env": {"catalog", "model_groups"},
    "config": {"catalog", "model_groups", "provider_env"},
    "providers": {"keys", "config", "errors"},
    "state": {"keys", "config"},
    "db": {"errors", "usage", "timefmt", "config"},
    "chat": {"keys", "providers", "state"} | BASE,
    "metrics": {"keys", "state"} | BASE,
    "vault": {"keys", "providers", "state", "db"} | BASE,
    "cache": {"state"} | BASE,
    "access": {"db", "state"} | BASE,
    "observability": {"chat", "keys", "providers", "state", "db", "metrics"} | BASE,
    "dashboard": BASE,
    "api": {
        "access",
        "chat",
        "keys",
        "state",
        "db",
        "runtime",
        "schemas",
        "metrics",
        "vault",
        "observability",
        "cache",
    }
    | BASE,
    "runtime": {
        "access",
        "chat",
        "providers",
        "state",
        "db",
        "metrics",
        "observability",
        "cache",
        "vault",
    }
    | BASE,
    "main": {"api", "runtime", "observability", "dashboard"} | BASE,
    "cli": {"access", "db", "demo", "vault", "observability", "metrics", "serving"} | BASE,
    "demo": {"main", "serving"} | BASE,
}


def room_of(path: Path) -> str:
    first = path.relative_to(APP).parts[0]
    return first.removesuffix(".py")


def rooms_imported(source: str) -> set[str]:
    return {n.split(".")[1] for n in imported(ast.parse(source)) if n.startswith("app.")}


def test_every_room_imports_only_the_rooms_below_it():
    wrong: dict[str, set[str]] = {}
    for path in sorted(APP.rglob("*.py")):
        room = room_of(path)
        if room == "__init__":
            continue
        assert room in ALLOWED, f"app/{room} is a new room: add its rules to ALLOWED"
        bad = rooms_imported(path.read_text()) - ALLOWED[room] - {room}
        if bad:
            wrong[str(path.relative_to(APP))] = bad
    assert wrong == {}


def test_the_room_rules_have_no_cycle():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in ALLOWED.get(start, set()) - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    assert [room for room in ALLOWED if reaches(room, room, set())] == []


def test_the_room_checker_sees_an_upward_import():
    assert rooms_imported("from app.runtime import Runtime\nimport app.chat.service\n") == {
        "runtime",
        "chat",
    }


def test_the_checker_catches_each_kind_of_impurity():
    source = (
        "import time, asyncio\nfrom httpx import AsyncClient\nfrom app.chat import service\n"
        "from asyncio import sleep\nfrom app.keys.model import KeyState\n"
        "def f():\n    return time.time() + asyncio.sleep(1)\n"
    )
    assert sorted(impurities(source)) == [
        "app.chat",
        "app.chat.service",
        "asyncio.sleep",
        "asyncio.sleep",
        "httpx",
        "httpx.AsyncClient",
        "time.time",
    ]
