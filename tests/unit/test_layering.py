"""Dependency direction: `app/keys` is pure, and aiohttp stays inside `providers/` (and the demo)."""

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


def test_aiohttp_lives_only_in_providers_and_demo():
    allowed = (APP / "providers", APP / "demo")
    users = [
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if not any(path.is_relative_to(root) for root in allowed)
        and any(n.split(".")[0] == "aiohttp" for n in imported(ast.parse(path.read_text())))
    ]
    assert users == []


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
