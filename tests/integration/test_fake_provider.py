"""The fake provider over real loopback HTTP: OpenAI shapes, fault modes, limits, counters."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from app.demo.fake_provider import (
    FakeProvider,
    FakeProviderConfig,
    FakeProviderThread,
    KeyBehaviour,
    run_fake_provider,
)

KEY = "test-key"
RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-small", "messages": [{"role": "user", "content": "x" * 40}], **extra}


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll a condition with a bounded wait instead of sleeping a fixed time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def read_events(response: httpx.Response, into: list[str]) -> None:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            into.append(line.removeprefix("data: "))


async def read_broken_stream(client: httpx.AsyncClient) -> tuple[list[str], Exception | None]:
    """The events of a 200 stream the server may cut, and the transport error if it did."""
    events: list[str] = []
    try:
        async with client.stream("POST", "/chat/completions", json=chat_body(stream=True)) as r:
            assert r.status_code == 200
            await read_events(r, events)
    except httpx.TransportError as exc:
        return events, exc
    return events, None


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    async with run_fake_provider(FakeProviderConfig(keys={KEY: KeyBehaviour()})) as provider:
        yield provider


@pytest.fixture
async def client(fake: FakeProvider) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.base_url, headers=auth(), timeout=5) as c:
        yield c


class TestChat:
    async def test_non_stream_shape_and_headers(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/chat/completions", json=chat_body())
        assert response.status_code == 200
        body = response.json()
        assert body["id"].startswith("chatcmpl-")
        assert (body["object"], body["model"]) == ("chat.completion", "fake-small")
        assert isinstance(body["created"], int)
        assert body["choices"] == [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "w0 w1 w2 w3 w4 "},
                "finish_reason": "stop",
            }
        ]
        assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        assert all(name in response.headers for name in RATE_HEADERS)

    async def test_stream_with_usage_ends_with_done(self, client: httpx.AsyncClient) -> None:
        events: list[str] = []
        body = chat_body(stream=True, stream_options={"include_usage": True})
        async with client.stream("POST", "/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert "x-ratelimit-remaining-requests" in response.headers
            await read_events(response, events)
        assert events[-1] == "[DONE]"
        chunks = [orjson.loads(e) for e in events[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "w0 "}
        contents = [c["choices"][0]["delta"].get("content") for c in chunks[:5]]
        assert contents == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 "]
        assert chunks[5]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
        assert chunks[6]["choices"] == []
        assert chunks[6]["usage"]["completion_tokens"] == 5

    async def test_stream_without_usage(self, client: httpx.AsyncClient) -> None:
        events: list[str] = []
        async with client.stream("POST", "/chat/completions", json=chat_body(stream=True)) as r:
            await read_events(r, events)
        assert len(events) == 7  # 5 content chunks, the finish chunk, [DONE]
        assert all("usage" not in orjson.loads(e) for e in events[:-1])

    async def test_max_tokens_truncates(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/chat/completions", json=chat_body(max_tokens=2))
        choice = response.json()["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("w0 w1 ", "length")

    @pytest.mark.parametrize("headers", [auth("nope"), {"Authorization": "Basic x"}, {}])
    async def test_unknown_key_is_401(self, fake: FakeProvider, headers: dict[str, str]) -> None:
        async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as anonymous:
            response = await anonymous.post("/chat/completions", json=chat_body())
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert fake.stats()["unknown_key_requests"] == 1

    async def test_unknown_model_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/chat/completions", json=chat_body(model="gpt-9"))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"

    async def test_invalid_json_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/chat/completions", content=b"{oops")
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"

    async def test_any_model_and_any_key(self) -> None:
        config = FakeProviderConfig(models=None, accept_any_key=True)
        async with (
            run_fake_provider(config) as fake,
            httpx.AsyncClient(base_url=fake.base_url, headers=auth("whatever")) as c,
        ):
            response = await c.post("/chat/completions", json=chat_body(model="gpt-9"))
            assert response.status_code == 200
            assert fake.stats()["keys"]["whatever"]["ok"] == 1


class TestRateLimits:
    async def test_rps_limit_gives_429_with_retry_after(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, rps=3)
        statuses = [(await client.post("/chat/completions", json=chat_body())) for _ in range(4)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429]
        assert statuses[2].headers["x-ratelimit-remaining-requests"] == "0"
        limited = statuses[3]
        assert limited.headers["retry-after"] == "1"
        assert 0 < int(limited.headers["retry-after-ms"]) <= 1000
        assert limited.headers["x-ratelimit-limit-requests"] == "3"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"

    async def test_rpm_limit_announces_minute_reset(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, rpm=1)
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
        limited = await client.post("/chat/completions", json=chat_body())
        assert limited.status_code == 429
        assert 59 <= int(limited.headers["retry-after"]) <= 60

    async def test_models_probe_sees_full_window_without_using_it(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, rpm=1)
        assert (await client.get("/models")).status_code == 200
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 200
        assert (await client.get("/models")).status_code == 429
        key_stats = fake.stats()["keys"][KEY]
        assert (key_stats["requests"], key_stats["models_requests"]) == (1, 2)

    async def test_reset_empties_windows_and_counters(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, rpm=1)
        await client.post("/chat/completions", json=chat_body())
        await client.post(fake.base_url.removesuffix("/v1") + "/_control/reset")
        assert fake.stats()["keys"][KEY]["requests"] == 0
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 200


class TestFaultModes:
    @pytest.mark.parametrize(
        ("mode", "status"),
        [("error_500", 500), ("forbidden", 403), ("unauthorized", 401), ("rate_limited", 429)],
    )
    async def test_mode_applies_to_chat_and_models(
        self, fake: FakeProvider, client: httpx.AsyncClient, mode: str, status: int
    ) -> None:
        fake.set_key(KEY, mode=mode)
        chat = await client.post("/chat/completions", json=chat_body())
        models = await client.get("/models")
        assert (chat.status_code, models.status_code) == (status, status)
        assert set(chat.json()["error"]) == {"message", "type", "code", "param"}
        assert "x-ratelimit-limit-requests" in chat.headers
        assert fake.stats()["keys"][KEY]["status"] == {str(status): 1}

    async def test_rate_limited_mode_announces_retry(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, mode="rate_limited", retry_after_s=2.5)
        response = await client.post("/chat/completions", json=chat_body())
        assert response.headers["retry-after"] == "3"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"] == "2.5s"

    @pytest.mark.parametrize("path", ["/chat/completions", "/models"])
    async def test_reset_mode_is_a_transport_error(
        self, fake: FakeProvider, client: httpx.AsyncClient, path: str
    ) -> None:
        fake.set_key(KEY, mode="reset")
        method = "POST" if path == "/chat/completions" else "GET"
        with pytest.raises(httpx.TransportError):
            await client.request(method, path, json=chat_body())
        assert fake.stats()["keys"][KEY]["dropped"] == 1

    async def test_stream_cut_sends_cut_after_chunks_then_drops(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, mode="stream_cut", cut_after=3)
        events, error = await read_broken_stream(client)
        assert isinstance(error, httpx.TransportError)
        assert [orjson.loads(e)["choices"][0]["delta"]["content"] for e in events] == [
            "w0 ",
            "w1 ",
            "w2 ",
        ]
        plain = await client.post("/chat/completions", json=chat_body())
        assert plain.status_code == 200  # stream_cut leaves non-stream requests alone

    async def test_stream_fail_before_first(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, mode="stream_fail_before_first")
        events, error = await read_broken_stream(client)
        assert isinstance(error, httpx.TransportError)
        assert events == []
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 500
        assert (await client.get("/models")).status_code == 500


class TestCounters:
    async def test_hang_cancelled_by_client_brings_gauges_back(self, fake: FakeProvider) -> None:
        fake.set_key(KEY, mode="hang")
        async with httpx.AsyncClient(base_url=fake.base_url, headers=auth()) as c:
            request = asyncio.create_task(c.post("/chat/completions", json=chat_body()))
            await wait_until(lambda: fake.stats()["in_flight"] == 1)
            assert fake.stats()["keys"][KEY]["in_flight"] == 1
            assert fake.stats()["open_connections"] == 1
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
        await wait_until(lambda: fake.stats()["open_connections"] == 0)
        stats = fake.stats()
        assert (stats["in_flight"], stats["keys"][KEY]["in_flight"]) == (0, 0)

    async def test_client_leaving_mid_stream_closes_the_stream(self, fake: FakeProvider) -> None:
        fake.set_key(KEY, chunks=50, chunk_interval_ms=20)
        async with (
            httpx.AsyncClient(base_url=fake.base_url, headers=auth()) as c,
            c.stream("POST", "/chat/completions", json=chat_body(stream=True)) as response,
        ):
            async for _ in response.aiter_lines():
                break
            assert fake.stats()["streams_open"] == 1
        await wait_until(lambda: fake.stats()["open_connections"] == 0)
        stats = fake.stats()
        assert (stats["streams_open"], stats["in_flight"]) == (0, 0)
        assert stats["keys"][KEY]["ok"] == 0

    async def test_stats_route_matches_python_accessor(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        await client.post("/chat/completions", json=chat_body())
        await client.get("/models")
        served = (await client.get(fake.base_url.removesuffix("/v1") + "/_control/stats")).json()
        assert served["keys"][KEY] == fake.stats()["keys"][KEY]
        assert served["keys"][KEY] == {
            "requests": 1,
            "ok": 1,
            "status": {"200": 1},
            "models_requests": 1,
            "dropped": 0,
            "streams_open": 0,
            "in_flight": 0,
        }
        assert (served["total_requests"], served["total_models_requests"]) == (1, 1)
        assert served["open_connections"] == 1


class TestControl:
    async def test_put_key_changes_behaviour_at_run_time(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        control = fake.base_url.removesuffix("/v1") + "/_control/keys/"
        answer = await client.put(control + "new-key", json={"mode": "forbidden"})
        assert answer.json()["mode"] == "forbidden"
        response = await client.post("/chat/completions", json=chat_body(), headers=auth("new-key"))
        assert response.status_code == 403
        assert (await client.put(control + KEY, json={"mode": "nope"})).status_code == 400
        assert (await client.put(control + KEY, content=b"[1]")).status_code == 400

    async def test_set_key_keeps_window_when_limits_unchanged(
        self, fake: FakeProvider, client: httpx.AsyncClient
    ) -> None:
        fake.set_key(KEY, rpm=1)
        await client.post("/chat/completions", json=chat_body())
        fake.set_key(KEY, latency_ms=1)
        assert (await client.post("/chat/completions", json=chat_body())).status_code == 429


class TestRunners:
    def test_thread_runner(self) -> None:
        config = FakeProviderConfig(keys={KEY: KeyBehaviour()})
        with FakeProviderThread(config) as fake, httpx.Client(headers=auth()) as c:
            assert c.get(fake.base_url + "/models").json()["data"][0]["owned_by"] == "fake"
            fake.set_key(KEY, mode="error_500")
            assert c.post(fake.base_url + "/chat/completions", json=chat_body()).status_code == 500
            assert fake.stats()["keys"][KEY]["status"] == {"500": 1}
            fake.reset()
            assert fake.stats()["total_requests"] == 0

    def test_thread_runner_reports_bind_failure(self) -> None:
        with FakeProviderThread() as first, pytest.raises(OSError, match="in use"):
            FakeProviderThread(port=first.port).start()

    def test_command_line_serves_and_exits_on_sigterm(self) -> None:
        command = [sys.executable, "-m", "app.demo.fake_provider", "--port", "0", "--keys", KEY]
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("fake provider listening on http://127.0.0.1:")
            base_url = line.split(" on ")[1].strip()
            response = httpx.post(base_url + "/chat/completions", json=chat_body(), headers=auth())
            assert response.status_code == 200
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
