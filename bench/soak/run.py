"""One soak run: services, two gateways, traffic and the fault schedule; then the figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from app.db.session import create_engine
from bench.procs import PYTHON, Server, Servers, free_port, rss_mb, start
from bench.servers import clean_env, start_fake
from bench.soak.faults import ALPHA_KEYS, BETA_KEYS, Fault, schedule
from bench.soak.services import PrivatePostgres, PrivateRedis
from bench.soak.traffic import Traffic

KEYS = {"alpha": ALPHA_KEYS, "beta": BETA_KEYS}
# Short upstream timeout: a hanging key costs 3 s, not the default 60.
UPSTREAM_TIMEOUT_S = 3.0
HEALTHY = {"mode": "ok", "latency_ms": 20, "ttft_ms": 20, "chunk_interval_ms": 10, "chunks": 5}


@dataclass
class Sample:
    rss_mb: float
    fds: int


def sample(pid: int) -> Sample:
    return Sample(round(rss_mb(pid), 1), len(os.listdir(f"/proc/{pid}/fd")))


@dataclass
class Soak:
    """Everything a run starts, so that `close` stops all of it whatever failed."""

    duration: float
    rate: float
    log_dir: Path
    servers: Servers = field(default_factory=Servers)
    fakes: dict[str, Server] = field(default_factory=dict)
    gateways: dict[int, Server] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)
    pg: PrivatePostgres | None = None
    redis: PrivateRedis | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)

    # -- set-up ------------------------------------------------------------------------------

    def start_services(self) -> None:
        self.pg = PrivatePostgres().init().start()
        self.redis = PrivateRedis().start()
        for name, keys in KEYS.items():
            config = {"keys": dict.fromkeys(keys, HEALTHY), "models": ["fake-small"]}
            self.fakes[name] = start_fake(self.servers, config, self.log_dir / name)
        for instance in (1, 2):  # one after the other: each migrates the database at start
            self.ports[instance] = free_port()
            self.start_gateway(instance)

    def gateway_env(self, instance: int) -> dict[str, str]:
        assert self.pg is not None
        assert self.redis is not None
        env = {
            "LLM_PROVIDERS": ",".join(KEYS),
            "DATABASE_URL": self.pg.url,
            "REDIS_URL": self.redis.url,
            "KEYPOOL_REDIS_PREFIX": "soak:",
            "STATS_SPOOL_PATH": str(self.log_dir / f"spool-{instance}.jsonl"),
            "STATS_FLUSH_INTERVAL_S": "0.5",
            "PROBE_INTERVAL_S": "2",
            "CIRCUIT_RESET_S": "5",
            "REQUEST_DEADLINE_S": "20",
            "AUTH_MODE": "none",
            "ADMIN_TOKEN": "soak-admin-token",
            "LOG_LEVEL": "WARNING",
        }
        for name, keys in KEYS.items():
            prefix = name.upper()
            env[f"{prefix}_API_KEYS"] = ",".join(keys)
            env[f"{prefix}_BASE_URL"] = f"{self.fakes[name].base}/v1"
            env[f"{prefix}_DEFAULT_MODEL"] = "fake-small"
            env[f"{prefix}_TIMEOUT_S"] = str(UPSTREAM_TIMEOUT_S)
        return env

    def start_gateway(self, instance: int) -> Server:
        port = self.ports[instance]
        argv = [PYTHON, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--log-level", "warning"]
        life = sum(1 for log in self.logs if log.name.startswith(f"gateway{instance}"))
        server = start(
            f"gateway{instance}" + "-restarted" * life,
            argv,
            port=port,
            log_dir=self.log_dir,
            core=None,
            env=clean_env(self.gateway_env(instance)),
            ready_path="/readyz",
            timeout=90,
        )
        self.gateways[instance] = self.servers.add(server)
        self.logs.append(server.log_path)
        return server

    def stop_gateway(self, instance: int, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait: the gateway drains, flushes (or spools) and exits."""
        server = self.gateways[instance]
        server.proc.send_signal(signal.SIGTERM)
        try:
            return server.proc.wait(timeout=timeout)
        finally:
            server.stop()

    # -- faults ------------------------------------------------------------------------------

    async def set_keys(self, provider: str, keys: tuple[str, ...], changes: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            for key in keys:
                url = f"{self.fakes[provider].base}/_control/keys/{key}"
                (await client.put(url, json=changes)).raise_for_status()

    async def apply(self, fault: Fault, on: bool, traffic: Traffic) -> None:
        t = traffic.now()
        if fault.provider is not None:
            changes = {"mode": fault.mode, **dict(fault.extra)} if on else {"mode": "ok"}
            await self.set_keys(fault.provider, fault.keys, changes)
        elif fault.name.startswith("redis"):
            assert self.redis is not None
            await asyncio.to_thread(self.redis.crash if on else self.redis.start)
        elif fault.name.startswith("postgres"):
            assert self.pg is not None
            await asyncio.to_thread(self.pg.crash if on else self.pg.start)
        elif fault.name.startswith("gateway 1") and on:
            await self.restart_gateway(1, traffic)
        self.events.append({"at_s": round(t, 2), "fault": fault.name, "on": on})

    async def restart_gateway(self, instance: int, traffic: Traffic) -> None:
        """As a load balancer drains an instance: no new requests, the running ones finish,
        then SIGTERM; started again at once (the database is down meanwhile)."""
        traffic.active.discard(instance)
        began = time.monotonic()
        await traffic.drain(instance)
        drained = time.monotonic()
        code = await asyncio.to_thread(self.stop_gateway, instance)
        stopped = time.monotonic()
        spool = self.log_dir / f"spool-{instance}.jsonl"
        self.notes["restart_exit_code"] = code
        self.notes["spooled_lines_at_restart"] = (
            len(spool.read_text().splitlines()) if spool.exists() else 0
        )
        await asyncio.to_thread(self.start_gateway, instance)
        self.notes["restart_seconds"] = {
            "drain": round(drained - began, 2),
            "stop": round(stopped - drained, 2),
            "start": round(time.monotonic() - stopped, 2),
        }
        self.notes["spool_left_after_restart"] = spool.exists() and spool.stat().st_size > 0
        traffic.active.add(instance)

    async def run_schedule(self, faults: list[Fault], traffic: Traffic) -> None:
        steps = sorted(
            [(f.start * self.duration, f, True) for f in faults]
            + [(f.end * self.duration, f, False) for f in faults],
            key=lambda step: step[0],
        )
        for at, fault, on in steps:
            delay = at - traffic.now()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.apply(fault, on, traffic)

    # -- figures -----------------------------------------------------------------------------

    async def fake_stats(self) -> dict[str, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return {
                name: (await client.get(f"{fake.base}/_control/stats")).json()
                for name, fake in self.fakes.items()
            }

    async def settle_upstream(self, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """Fake stats once nothing is in flight upstream (or after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.fake_stats()
            busy = sum(s["in_flight"] + s["streams_open"] for s in stats.values())
            if busy == 0 or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)

    async def open_upstream_connections(self, timeout: float = 10.0) -> int:
        """Connections the fakes still hold once the gateways are gone (the harness's own
        stats request is one per fake: not counted)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.fake_stats()
            count = sum(max(0, int(s["open_connections"]) - 1) for s in stats.values())
            if count == 0 or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.1)

    async def stored_stats(self) -> dict[str, dict[str, int]]:
        """api_key_stats summed per provider key, plus the stored users."""
        assert self.pg is not None
        engine = create_engine(self.pg.url)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text(
                        "SELECT provider, key_index, sum(total_requests), sum(rate_limited),"
                        " sum(errors) FROM api_key_stats GROUP BY provider, key_index"
                    )
                )
                users = (await conn.execute(text("SELECT count(*) FROM user_profiles"))).scalar()
        finally:
            await engine.dispose()
        stored: dict[str, dict[str, int]] = {}
        for provider, index, requests, limited, errors in rows:
            name = KEYS[provider][index]
            stored[name] = {"requests": int(requests), "429": int(limited), "errors": int(errors)}
        self.notes["users_stored"] = int(users or 0)
        return stored

    def close(self) -> None:
        self.servers.__exit__(None, None, None)
        for service in (self.redis, self.pg):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.destroy()


async def soak(duration: float, rate: float, log_dir: Path | None = None) -> dict[str, Any]:
    """Run the soak; returns the raw figures (see `report.summarise`)."""
    own_dir = log_dir is None
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="keypool-soak-"))
    run = Soak(duration, rate, log_dir)
    faults = schedule(duration)
    try:
        await asyncio.to_thread(run.start_services)
        bases = {i: g.base for i, g in run.gateways.items()}
        traffic = Traffic(rate, bases)
        load = asyncio.create_task(traffic.run())
        await asyncio.sleep(min(5.0, 0.05 * duration))
        start_samples = {i: sample(g.pid) for i, g in run.gateways.items()}
        await run.run_schedule(faults, traffic)
        await asyncio.sleep(max(0.0, duration - traffic.now()))
        traffic.stop()
        await load
        upstream = await run.settle_upstream()
        end_samples = {i: sample(g.pid) for i, g in run.gateways.items()}
        for instance in sorted(run.gateways):
            run.notes[f"gateway{instance}_exit_code"] = await asyncio.to_thread(
                run.stop_gateway, instance
            )
        left_open = await run.open_upstream_connections()
        stored = await run.stored_stats()
        await traffic.aclose()
        return {
            "duration_s": duration,
            "rate": rate,
            "faults": faults,
            "events": run.events,
            "records": traffic.records,
            "upstream": upstream,
            "stored": stored,
            "left_open": left_open,
            "samples": {"start": start_samples, "end": end_samples},
            "notes": run.notes,
            "tracebacks": _tracebacks(run.logs),
        }
    finally:
        run.close()
        if own_dir:
            shutil.rmtree(log_dir, ignore_errors=True)


def _tracebacks(logs: list[Path]) -> int:
    count = 0
    for path in logs:
        with contextlib.suppress(OSError):
            count += path.read_text(errors="replace").count("Traceback (most recent call last)")
    return count
