"""Unexpected failures: a 500 envelope, one log line without the message, a reusable connection."""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env

TOKEN = "admin-token-for-crash-tests"
SECRET_TEXT = "secret-text-that-must-not-be-logged"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # uvicorn's loggers do not propagate to the root logger pytest listens on.
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    uvicorn_error.removeHandler(caplog.handler)


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    fake = make_fake({"sk-alpha-crash-000000001": {}})
    gw = make_gateway(
        {**provider_env("alpha", fake, ["sk-alpha-crash-000000001"]), "ADMIN_TOKEN": TOKEN}
    )

    async def boom() -> None:
        raise RuntimeError(SECRET_TEXT)

    gw.app.add_api_route("/api/boom", boom, methods=["GET"])
    gw.app.add_api_route("/v1/boom", boom, methods=["GET"])
    return gw


@pytest.fixture
def conn(gateway: GatewayServer) -> Iterator[http.client.HTTPConnection]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    yield connection
    connection.close()


def ask(conn: http.client.HTTPConnection, method: str, path: str) -> tuple[int, dict[str, object]]:
    conn.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
    answer = conn.getresponse()
    return answer.status, orjson.loads(answer.read())


def test_a_key_index_beyond_64_bits_is_unknown_key(conn: http.client.HTTPConnection) -> None:
    status, body = ask(conn, "POST", "/api/admin/api-keys/alpha/99999999999999999999/enable")
    assert status == 404
    assert body["error"]["type"] == "unknown_key"  # type: ignore[index]


def test_an_unexpected_error_is_a_500_envelope_and_the_connection_stays_usable(
    conn: http.client.HTTPConnection, logs: pytest.LogCaptureFixture
) -> None:
    status, body = ask(conn, "GET", "/api/boom")
    assert (status, body["error"]["type"]) == (500, "internal_error")  # type: ignore[index]
    status, body = ask(conn, "GET", "/v1/boom")  # same connection: not reset
    assert status == 500
    assert body["error"]["type"] == "api_error"  # type: ignore[index]
    assert body["error"]["code"] == "internal_error"  # type: ignore[index]
    status, _ = ask(conn, "GET", "/healthz")
    assert status == 200
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, [r.getMessage() for r in errors]
    assert all("RuntimeError" in r.getMessage() for r in errors)
    assert all(r.exc_info is None for r in errors)
    assert SECRET_TEXT not in logs.text


def test_the_500_carries_the_request_id_the_client_can_quote(
    conn: http.client.HTTPConnection,
) -> None:
    conn.request("GET", "/api/boom", headers={"X-Request-Id": "crash-req-1"})
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 500
    assert answer.getheader("x-request-id") == "crash-req-1"
