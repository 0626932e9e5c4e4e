"""Shared bench plumbing: run context, result sections, endpoints and the server stack."""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import Run, open_loop
from bench.procs import Server, Servers
from bench.servers import fake_stats, start_fake, start_gateway, start_passthrough, upstream_counts
from bench.stats import arun

Row = dict[str, Any]


@dataclass
class Ctx:
    quick: bool
    raw_dir: Path
    wrk_path: str | None
    notes: list[str] = field(default_factory=list)

    def dur(self, full: float, quick: float) -> float:
        return quick if self.quick else full


@dataclass
class Section:
    key: str
    title: str
    about: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def error_row(self, target: str, exc: BaseException | str, **cols: Any) -> None:
        msg = exc if isinstance(exc, str) else describe(exc)
        self.rows.append({self.columns[0]: target, **cols, "error": " ".join(msg.split())[:300]})


def describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return re.sub(r"^(bench\.\w+\.)?(TargetDown: )?", "", text)


def holds(cond: bool | None) -> str:
    return "n/a" if cond is None else ("yes" if cond else "**NO**")


MSG = [{"role": "user", "content": "hi"}]
OPENAI = {"model": "fake-small", "messages": MSG}
PATH_A = {"messages": MSG}
PATH_B = {"model": "fake-small", "messages": MSG}


def body(obj: dict[str, Any], **extra: Any) -> bytes:
    import orjson

    return orjson.dumps({**obj, **extra})


@dataclass(frozen=True)
class Endpoint:
    label: str
    server: str  # "direct" | "passthrough" | "gateway"
    path: str
    body: bytes
    kind: str = "openai"  # stream framing: "openai" or "keypool"
    headers: tuple[tuple[str, str], ...] = ()


def chat_endpoints(stream: bool = False) -> list[Endpoint]:
    """The request/response endpoints compared side by side (stream: their SSE variants)."""
    if stream:
        return [
            Endpoint(
                "direct /v1 stream", "direct", "/v1/chat/completions", body(OPENAI, stream=True)
            ),
            Endpoint(
                "passthrough /v1 stream",
                "passthrough",
                "/v1/chat/completions",
                body(OPENAI, stream=True),
            ),
            Endpoint(
                "gateway /v1 stream", "gateway", "/v1/chat/completions", body(OPENAI, stream=True)
            ),
            Endpoint(
                "gateway /api/chat/stream (B)",
                "gateway",
                "/api/chat/stream",
                body(PATH_B),
                kind="keypool",
            ),
        ]
    return [
        Endpoint("direct /v1", "direct", "/v1/chat/completions", body(OPENAI)),
        Endpoint("passthrough /v1", "passthrough", "/v1/chat/completions", body(OPENAI)),
        Endpoint("gateway /v1", "gateway", "/v1/chat/completions", body(OPENAI)),
        Endpoint("gateway Path A /api/chat", "gateway", "/api/chat", body(PATH_A)),
        Endpoint("gateway Path B /api/chat", "gateway", "/api/chat", body(PATH_B)),
    ]


class TargetDown(RuntimeError):
    pass


@dataclass
class Stack:
    key_names: list[str]
    servers: dict[str, Server] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def server(self, name: str) -> Server:
        name = "fake" if name == "direct" else name
        if name in self.servers:
            srv = self.servers[name]
            if not srv.alive():
                raise TargetDown(f"{name} died (exit {srv.proc.returncode}): {srv.failure()}")
            return srv
        raise TargetDown(self.errors.get(name, f"{name} not started"))

    def url(self, ep: Endpoint) -> str:
        return self.server(ep.server).base + ep.path

    def headers(self, ep: Endpoint) -> dict[str, str]:
        hdrs = dict(ep.headers)
        if ep.server == "direct":
            hdrs.setdefault("Authorization", f"Bearer {self.key_names[0]}")
        return hdrs


@contextmanager
def stack(
    ctx: Ctx,
    config: dict[str, Any],
    key_names: list[str],
    want: tuple[str, ...] = ("passthrough", "gateway"),
    gateway_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Fake provider (+ passthrough and/or gateway in front of it); a server that fails to start
    is recorded in `Stack.errors` and its rows become error rows."""
    st = Stack(key_names=key_names)
    with Servers() as group:
        try:
            st.servers["fake"] = start_fake(group, config, ctx.raw_dir)
        except Exception as exc:
            st.errors["fake"] = describe(exc)
        fake = st.servers.get("fake")
        for name in want:
            if fake is None:
                st.errors[name] = "fake provider did not start: " + st.errors["fake"]
                continue
            try:
                if name == "passthrough":
                    st.servers[name] = start_passthrough(group, fake, key_names, ctx.raw_dir)
                else:
                    st.servers[name] = start_gateway(
                        group, fake, key_names, ctx.raw_dir, gateway_env
                    )
            except Exception as exc:
                st.errors[name] = describe(exc)
        yield st


def gateway_open_loop(
    ctx: Ctx,
    config: dict[str, Any],
    key_names: list[str],
    gateway_env: dict[str, str],
    ep: Endpoint,
    rate: float,
    duration: float,
    timeout: float = 30,
) -> tuple[Run, dict[str, int]]:
    """Fresh fake + gateway, one open-loop run against `ep`; returns it and the fake's counts."""
    with stack(ctx, config, key_names, want=("gateway",), gateway_env=gateway_env) as st:
        run = arun(
            open_loop(
                st.url(ep), ep.body, st.headers(ep), rate=rate, duration=duration, timeout=timeout
            )
        )
        return run, upstream_counts(fake_stats(st.server("fake")))
