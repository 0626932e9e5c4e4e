"""A redis-server of the bench's own for scenario 6.

The machine's Redis (127.0.0.1:6379) serves whatever else runs here: another program's traffic
would be measured as the gateway's. A private server on a free port, without persistence,
serves only the gateways under test. Like the machine's Redis it is not pinned: the scheduler
places it on either core, as it would a Redis sharing the gateway's host. (Pinned to the load
generator's core it would queue behind the client reading its answer; on this VM a wake-up on
the other core also costs ~30 us each way, against ~5 us on the same one.) Without a
redis-server binary the machine's Redis is used instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.procs import SERVER_CORE, cpu_seconds, free_port, pinning_available

SYSTEM_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RedisTarget:
    url: str
    pid: int | None  # for its CPU time
    private: bool

    def describe(self) -> str:
        if self.private:
            return f"a private redis-server ({self.url}, not pinned)"
        return f"the machine's Redis ({self.url}, not pinned, shared with anything else)"


def answers_ping(port: int) -> bool:
    """Whether a Redis on this loopback port answers PING (start-up polls; tests use it too)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _system_pid(url: str) -> int | None:
    from redis import Redis

    try:
        with Redis.from_url(url, socket_timeout=5) as client:
            return int(client.info("server")["process_id"])
    except Exception:
        return None


@contextlib.contextmanager
def redis_for_bench() -> Iterator[RedisTarget]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        yield RedisTarget(SYSTEM_URL, _system_pid(SYSTEM_URL), private=False)
        return
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    cmd += ["no", "--protected-mode", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not answers_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
        yield RedisTarget(f"redis://127.0.0.1:{port}/0", proc.pid, private=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def drop_prefix(url: str, prefix: str) -> int:
    """Delete the run's keys; returns how many there were (proof the gateway used Redis)."""
    from redis import Redis

    with Redis.from_url(url, socket_timeout=5) as client:
        found = list(client.scan_iter(match=prefix + "*", count=1000))
        if found:
            client.delete(*found)
        return len(found)


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its children (uvicorn's workers), 0 when unreadable."""
    if pid is None:
        return 0.0
    try:
        total = cpu_seconds(pid)
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    return total + sum(tree_cpu(int(child)) for child in children)


def reset_stats(url: str) -> None:
    from redis import Redis

    with Redis.from_url(url, socket_timeout=5) as client:
        client.config_resetstat()


def script_stats(url: str) -> tuple[int, float]:
    """Script calls (FCALL or EVALSHA) since `reset_stats`, and redis-server's µs per call."""
    from redis import Redis

    with Redis.from_url(url, socket_timeout=5) as client:
        stats = client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_fcall", "cmdstat_evalsha"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec / calls if calls else 0.0


def ping_floor(url: str, n: int = 300, gap_s: float = 0.002) -> tuple[float, float]:
    """p50 µs of a bare PING from the gateway's core: after `gap_s` of idle (as a sequential
    request finds Redis and both cores) and back to back. What any round trip costs here,
    before the script runs a single line."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    out: list[float] = []

    def measure() -> None:
        if pinning_available():
            os.sched_setaffinity(0, {SERVER_CORE})  # this thread only
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for gap in (gap_s, 0.0):
                times = []
                for _ in range(n):
                    if gap:
                        time.sleep(gap)
                    t0 = time.perf_counter()
                    sock.sendall(b"PING\r\n")
                    sock.recv(16)
                    times.append(time.perf_counter() - t0)
                out.append(statistics.median(times) * 1e6)

    thread = threading.Thread(target=measure)
    thread.start()
    thread.join()
    return out[0], out[1]
