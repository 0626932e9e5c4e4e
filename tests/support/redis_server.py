"""A redis-server of the test's own on a free port: killed by its PID and restarted on that port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from bench.redisproc import answers_ping

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str:
    found = REDIS_SERVER if os.path.exists(REDIS_SERVER) else shutil.which("redis-server")
    if found is None:
        message = "redis-server is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: a missing service is a failure)")
        pytest.skip(message)
    return found


class RedisServer:
    """No persistence: a restarted server starts empty, as a crashed cache server would."""

    def __init__(self, *options: str) -> None:
        self.binary = _binary()
        self.port = free_port()
        self.options = options  # extra redis-server arguments
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no", *self.options]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not answers_ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def pause(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT: a server that keeps its connections open and answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL by PID: no goodbye to clients, as in a crash."""
        if self.process is None:
            return
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def redis_server(*options: str) -> Iterator[RedisServer]:
    server = RedisServer(*options).start()
    try:
        yield server
    finally:
        server.kill()


SHARED_HOST, SHARED_PORT = "127.0.0.1", 6379
SHARED_URL = f"redis://{SHARED_HOST}:{SHARED_PORT}/0"


@contextlib.contextmanager
def shared_prefix() -> Iterator[str]:
    """A namespace of its own on the Redis at 6379; everything under it is deleted afterwards."""
    import uuid

    import redis

    from tests.support.servers import require_service

    require_service(SHARED_HOST, SHARED_PORT, "Redis")
    prefix = f"keypool-test:{uuid.uuid4().hex[:10]}:"
    try:
        yield prefix
    finally:
        with redis.Redis.from_url(SHARED_URL) as client:
            left = list(client.scan_iter(match=f"{prefix}*"))
            if left:
                client.delete(*left)
