"""Slow or silent clients cannot hold connections: header deadline, body timeout (408)."""

from __future__ import annotations

import socket
import time

import orjson
import pytest

import app.serving
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env


@pytest.fixture
def gateway(
    make_fake: FakeFactory, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> GatewayServer:
    monkeypatch.setattr(app.serving, "HEADER_TIMEOUT_S", 0.5)
    fake = make_fake({"k0": {}})
    return make_gateway({**provider_env("alpha", fake, ["k0"]), "BODY_READ_TIMEOUT_S": "0.5"})


def closed_by_server(sock: socket.socket, trickle: bytes, within_s: float) -> bool:
    """Send `trickle` a byte at a time until the server closes the connection (or time is up)."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + within_s
    position = 0
    while time.monotonic() < deadline:
        try:
            if position < len(trickle):
                sock.send(trickle[position : position + 1])
                position += 1
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_a_client_trickling_headers_is_disconnected(gateway: GatewayServer) -> None:
    headers = b"POST /api/chat HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        assert closed_by_server(sock, headers, within_s=5)


def test_a_connection_that_sends_nothing_is_disconnected(gateway: GatewayServer) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        assert closed_by_server(sock, b"", within_s=5)


def test_a_body_that_never_arrives_is_a_408(gateway: GatewayServer) -> None:
    request = (
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert orjson.loads(body)["error"]["type"] == "request_timeout"
