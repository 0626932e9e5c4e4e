"""Start, watch and stop the servers under test (subprocesses pinned with taskset)."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Core layout: load generator + fake provider on core 0, server under test on core 1.
LOADGEN_CORE = 0
SERVER_CORE = 1

_LIVE: dict[int, Server] = {}


def pinning_available() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin_self_to_loadgen_core() -> bool:
    """Pin the bench process (the Python load generators) to the load-generator core."""
    if (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(0, {LOADGEN_CORE})
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime/stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    core: int | None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self) -> str:
        """The most telling line of the log (the last exception line), plus the log's path."""
        lines = [ln.strip() for ln in self.log_tail(60).splitlines() if ln.strip()]
        pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
        exc = [ln for ln in lines if pattern.match(ln)]
        last = exc[-1] if exc else (lines[-1] if lines else "(empty log)")
        return f"{last[:240]} (log: {self.log_path})"

    def stop(self, timeout: float = 5.0) -> None:
        _LIVE.pop(self.pid, None)
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)


class StartError(RuntimeError):
    pass


def start(
    name: str,
    argv: list[str],
    *,
    port: int,
    log_dir: Path,
    core: int | None,
    env: dict[str, str] | None = None,
    ready_path: str = "/",
    ready_ok: tuple[int, ...] = (200,),
    timeout: float = 30.0,
) -> Server:
    """Start a server, pinned to `core`, and wait until GET `ready_path` answers `ready_ok`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    cmd = list(argv)
    if core is not None and pinning_available():
        cmd = ["taskset", "-c", str(core), *cmd]
    log = log_path.open("wb")
    try:
        proc = subprocess.Popen(  # taskset execs the program: proc.pid is the server itself
            cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    finally:
        log.close()
    server = Server(name=name, port=port, proc=proc, log_path=log_path, core=core)
    _LIVE[proc.pid] = server
    try:
        wait_ready(server, ready_path, ready_ok, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(server: Server, path: str, ok: tuple[int, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise StartError(
                f"{server.name} exited with {server.proc.returncode}: {server.failure()}"
            )
        try:
            with urllib.request.urlopen(server.base + path, timeout=2) as resp:
                if resp.status in ok:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise StartError(f"{server.name} not ready after {timeout:.0f}s ({last}): {server.failure()}")


def stop_all() -> None:
    for server in list(_LIVE.values()):
        server.stop()


class Servers(contextlib.AbstractContextManager["Servers"]):
    """Servers started inside a `with` block are stopped when it ends, whatever happens."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def add(self, server: Server) -> Server:
        self.started.append(server)
        return server

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_sigterm)
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGHUP, _on_sigterm)
