"""Bad input over real HTTP: every refusal is the JSON envelope naming the field, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.demo.fake_provider import FakeProviderConfig, FakeProviderThread, KeyBehaviour
from tests.support.servers import GatewayServer, provider_env

LIMIT = 100  # MAX_MESSAGE_CHARS for this module's gateway
OK_MESSAGE = {"role": "user", "content": "hi"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    fake = FakeProviderThread(FakeProviderConfig(keys={"k0": KeyBehaviour()})).start()
    env = {**provider_env("alpha", fake, ["k0"]), "MAX_MESSAGE_CHARS": str(LIMIT)}
    server = GatewayServer(env, tmp_path_factory.mktemp("bad-input")).start()
    yield server
    server.stop()
    fake.stop()


@pytest.fixture(scope="module")
def client(gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.base_url, timeout=10) as c:
        yield c


def with_messages(**fields: Any) -> dict[str, Any]:
    return {"messages": [OK_MESSAGE], **fields}


# (body, the loc the first detail must start with)
INVALID: list[tuple[Any, list[str]]] = [
    (b"{not json", ["body"]),
    (b"", ["body"]),
    (b"\xff\xfe", ["body"]),
    (b"[" * 2000, ["body"]),
    ([], ["body"]),
    (None, ["body"]),
    ("messages", ["body"]),
    (42, ["body"]),
    ({}, ["messages"]),
    ({"messages": "hi"}, ["messages"]),
    ({"messages": {"role": "user"}}, ["messages"]),
    ({"messages": []}, ["messages"]),
    ({"messages": [OK_MESSAGE] * 1001}, ["messages"]),
    ({"messages": [None]}, ["messages", "0"]),
    ({"messages": [{"role": "robot", "content": "x"}]}, ["messages", "0", "role"]),
    ({"messages": [{"role": "user", "content": 5}]}, ["messages", "0", "content"]),
    ({"messages": [{"role": "user"}]}, ["messages", "0", "content"]),
    ({"messages": [{"role": "user", "content": "x" * (LIMIT + 1)}]}, ["messages", "0", "content"]),
    ({"messages": [OK_MESSAGE, {"role": "user", "content": "y" * 5000}]}, ["messages", "1"]),
    (with_messages(temperature=3), ["temperature"]),
    (with_messages(temperature=-0.1), ["temperature"]),
    (with_messages(temperature="0.5"), ["temperature"]),
    (with_messages(max_tokens=0), ["max_tokens"]),
    (with_messages(max_tokens=10**9), ["max_tokens"]),
    (
        b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1' + b"0" * 30 + b"}",
        ["max_tokens"],
    ),
    (with_messages(max_tokens=1.5), ["max_tokens"]),
    (with_messages(max_tokens=True), ["max_tokens"]),
    (with_messages(top_p=1.5), ["top_p"]),
    (with_messages(fallback="maybe"), ["fallback"]),
    (with_messages(model=""), ["model"]),
    (with_messages(model=5), ["model"]),
    (with_messages(provider=""), ["provider"]),
    (with_messages(stop=5), ["stop"]),
    (with_messages(user_id=""), ["user_id"]),
]


def post(client: httpx.Client, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return client.post(path, content=content, headers=headers, **kwargs)


def assert_envelope(answer: httpx.Response) -> dict[str, Any]:
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    return dict(error)


@pytest.mark.parametrize(("body", "loc"), INVALID)
def test_api_chat_refuses_with_422_naming_the_field(
    client: httpx.Client, body: Any, loc: list[str]
):
    answer = post(client, "/api/chat", body)
    assert answer.status_code == 422, answer.text
    error = assert_envelope(answer)
    assert error["type"] == "invalid_request"
    first = error["details"][0]
    assert first["loc"][: len(loc)] == loc
    assert first["msg"]
    assert loc[0] in error["message"]


def for_v1(body: Any) -> Any:
    if isinstance(body, dict):
        return {"model": "auto", **body}
    if isinstance(body, bytes):
        return body.replace(b'{"messages"', b'{"model": "auto", "messages"', 1)
    return body


def valid_on_v1(body: Any) -> bool:
    """OpenAI messages may omit content, and /v1 relays fields it does not know as they are."""
    if not isinstance(body, dict):
        return False
    keypool_only = {"fallback", "provider", "stop", "user_id"}
    return body.get("messages") == [{"role": "user"}] or bool(set(body) & keypool_only)


V1_INVALID = [(for_v1(body), loc) for body, loc in INVALID if not valid_on_v1(body)]


@pytest.mark.parametrize(("body", "loc"), V1_INVALID)
def test_v1_refuses_with_400_invalid_request_error(client: httpx.Client, body: Any, loc: list[str]):
    answer = post(client, "/v1/chat/completions", body)
    assert answer.status_code == 400, answer.text
    error = assert_envelope(answer)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")
    if loc == ["body"]:
        assert error["param"] is None
    else:
        assert error["param"].startswith(".".join(loc))


def test_content_limit_is_inclusive(client: httpx.Client):
    body = {"messages": [{"role": "user", "content": "x" * LIMIT}]}
    assert post(client, "/api/chat", body).status_code == 200


def test_an_overlong_user_id_header_is_refused(client: httpx.Client):
    answer = post(client, "/api/chat", with_messages(), headers={"X-User-Id": "u" * 256})
    assert answer.status_code == 422
    assert assert_envelope(answer)["details"][0]["loc"] == ["header", "x-user-id"]


class TestBodySize:
    BIG = b'{"messages": [{"role": "user", "content": "' + b"x" * (1024 * 1024) + b'"}]}'

    def test_a_body_over_1_mib_is_413(self, client: httpx.Client):
        answer = post(client, "/api/chat", self.BIG)
        assert answer.status_code == 413
        assert assert_envelope(answer)["type"] == "payload_too_large"

    def test_a_chunked_body_over_1_mib_is_413(self, client: httpx.Client):
        chunks = (self.BIG[i : i + 65536] for i in range(0, len(self.BIG), 65536))
        answer = client.post("/v1/chat/completions", content=chunks)
        assert answer.status_code == 413
        assert assert_envelope(answer)["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("method", "path", "status", "kind"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("POST", "/api/chat/nowhere", 404, "not_found"),
        ("GET", "/api/chat", 405, "method_not_allowed"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
        ("PUT", "/v1/chat/completions", 405, "method_not_allowed"),
    ],
)
def test_routing_errors_are_envelopes(
    client: httpx.Client, method: str, path: str, status: int, kind: str
):
    answer = client.request(method, path)
    assert answer.status_code == status
    error = assert_envelope(answer)
    assert kind in (error["type"], error.get("code"))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    *("messages", "model", "provider", "fallback", "temperature", "max_tokens", "top_p", "stop"),
    *("stream", "stream_options", "user", "seed", "tools"),  # /v1 relays unknown fields as they are
]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_no_server_error(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert_envelope(answer)


@FUZZ
@given(body=JSON | st.binary(max_size=64))
def test_fuzz_whole_bodies_never_5xx(client: httpx.Client, body: Any):
    for path in ("/api/chat", "/v1/chat/completions"):
        assert_no_server_error(post(client, path, body))


@FUZZ
@given(field=st.sampled_from(FIELDS), value=JSON, role=st.sampled_from(["user", "tool", "x"]))
def test_fuzz_one_odd_field_never_5xx(client: httpx.Client, field: str, value: Any, role: str):
    body = {"model": "auto", "messages": [{"role": role, "content": "hi"}], field: value}
    assert_no_server_error(post(client, "/v1/chat/completions", body))
    body.pop("model") if field != "model" else None
    assert_no_server_error(post(client, "/api/chat", body))
