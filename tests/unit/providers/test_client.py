"""The OpenAI-compatible adapter over a fake in-memory Transport built from a plain function."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest

from app.chat.clients import ClientCache
from app.config import ApiKey, ProviderConfig
from app.keys.model import NO_SIGNAL, Outcome
from app.keys.signals import parse_signal
from app.providers import errors as up
from app.providers.client import ProviderClient, Usage, parse_chunk, parse_usage
from app.providers.transport import (
    UpstreamResponse,
    map_upstream_errors,
    rate_limit_headers,
    upstream_message,
)

SECRET = "sk-test-0123456789abcdefWXYZ"
PROVIDER = ProviderConfig(
    "alpha", "http://alpha.test/v1", "m-small", (ApiKey(SECRET, "alpha:0:WXYZ"),), timeout_s=7.0
)


@dataclass
class Sent:
    method: str
    url: str
    headers: Mapping[str, str]
    body: dict[str, object] | None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[bytes] = field(default_factory=list)
    fail_after_lines: up.UpstreamError | None = None


Handler = Callable[[Sent], Reply]


class FakeStream:
    def __init__(self, reply: Reply) -> None:
        self.headers = reply.headers
        self._reply = reply
        self.closed = False

    async def lines(self) -> AsyncIterator[bytes]:
        for line in self._reply.lines:
            yield line
        if self._reply.fail_after_lines is not None:
            raise self._reply.fail_after_lines

    async def aclose(self) -> None:
        self.closed = True


class FunctionTransport:
    """httpx MockTransport's idea: every call goes to `handler`; non-2xx raise like the real one."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sent: list[Sent] = []
        self.streams: list[FakeStream] = []

    def _reply(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None):
        sent = Sent(method, url, dict(headers), orjson.loads(body) if body else None)
        self.sent.append(sent)
        reply = self.handler(sent)
        if reply.status >= 300:
            signal = parse_signal(rate_limit_headers(reply.headers), time.time())
            raise up.error_for_status(reply.status, signal, upstream_message(reply.body))
        return reply

    async def request(self, method, url, headers, body, timeout_s) -> UpstreamResponse:
        reply = self._reply(method, url, headers, body)
        return UpstreamResponse(reply.status, reply.headers, reply.body)

    async def open_stream(self, url, headers, body, timeout_s) -> FakeStream:
        stream = FakeStream(self._reply("POST", url, headers, body))
        self.streams.append(stream)
        return stream

    async def aclose(self) -> None:
        return None


def completion(content: str | None = "hello", **extra: object) -> bytes:
    message = {"role": "assistant", "content": content}
    body = {"id": "cmpl-1", "choices": [{"message": message, "finish_reason": "stop"}], **extra}
    return orjson.dumps(body)


def event(delta: str | None = None, finish: str | None = None, **extra: object) -> bytes:
    choice = {"index": 0, "delta": {"content": delta} if delta else {}, "finish_reason": finish}
    return b"data: " + orjson.dumps({"choices": [choice], **extra}) + b"\n"


def client_for(
    handler: Handler, model: str = "m-small"
) -> tuple[ProviderClient, FunctionTransport]:
    transport = FunctionTransport(handler)
    return ProviderClient(PROVIDER, 0, transport, model), transport


PARAMS = {"messages": [{"role": "user", "content": "hi"}], "model": "ignored", "stream": True}


class TestComplete:
    async def test_posts_an_openai_body_with_the_key_and_model(self):
        client, transport = client_for(lambda sent: Reply(body=completion()))
        await client.complete({**PARAMS, "temperature": 0.5})
        [sent] = transport.sent
        assert (sent.method, sent.url) == ("POST", "http://alpha.test/v1/chat/completions")
        assert sent.headers["Authorization"] == f"Bearer {SECRET}"
        assert sent.body == {
            "messages": PARAMS["messages"],
            "model": "m-small",
            "temperature": 0.5,
        }

    async def test_reads_content_usage_and_rate_limit_signal(self):
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
        usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        body = completion("hi there", usage=usage)
        client, _ = client_for(lambda sent: Reply(body=body, headers=headers))
        result = await client.complete(PARAMS)
        assert (result.id, result.content, result.finish_reason) == ("cmpl-1", "hi there", "stop")
        assert result.usage == Usage(3, 4, 7)
        assert result.signal.exhausted_for_s == 2.0
        assert result.raw["choices"][0]["message"]["content"] == "hi there"

    async def test_null_content_is_empty_text(self):
        client, _ = client_for(lambda sent: Reply(body=completion(None)))
        assert (await client.complete(PARAMS)).content == ""

    @pytest.mark.parametrize(
        "body", [b"not json", b"{}", b'{"choices": []}', b'{"choices": [1]}', b"[]"]
    )
    async def test_an_unreadable_200_is_a_server_error(self, body: bytes):
        client, _ = client_for(lambda sent: Reply(body=body))
        with pytest.raises(up.UpstreamStreamError) as caught:
            await client.complete(PARAMS)
        assert caught.value.outcome is Outcome.SERVER_ERROR

    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            (400, up.UpstreamRejected),
            (401, up.UpstreamAuthFailed),
            (404, up.UpstreamNotFound),
            (429, up.UpstreamRateLimited),
            (502, up.UpstreamServerError),
        ],
    )
    async def test_error_statuses_become_typed_errors(
        self, status: int, kind: type[up.UpstreamError]
    ):
        body = orjson.dumps({"error": {"message": f"nope {status}", "type": "x"}})
        headers = {"retry-after": "7", "content-type": "application/json"}
        client, _ = client_for(lambda sent: Reply(status, body, headers))
        with pytest.raises(kind) as caught:
            await client.complete(PARAMS)
        assert caught.value.status == status
        assert caught.value.upstream_message == f"nope {status}"
        assert caught.value.signal.retry_after_s == 7.0
        assert SECRET not in str(caught.value)

    async def test_a_key_echoed_in_an_error_message_is_replaced_by_its_fingerprint(self):
        body = orjson.dumps({"error": {"message": f"key {SECRET} may not use max_tokens"}})
        client, _ = client_for(lambda sent: Reply(400, body))
        with pytest.raises(up.UpstreamRejected) as caught:
            await client.complete(PARAMS)
        assert caught.value.upstream_message == "key alpha:0:WXYZ may not use max_tokens"

    async def test_derived_model_client_shares_the_transport(self):
        client, transport = client_for(lambda sent: Reply(body=completion()))
        assert client.with_model("m-small") is client
        large = client.with_model("m-large")
        await large.complete(PARAMS)
        assert transport.sent[-1].body is not None
        assert transport.sent[-1].body["model"] == "m-large"
        assert large.key_index == 0

    async def test_path_a_clients_are_built_once_and_path_b_shares_their_transport(self):
        transport = FunctionTransport(lambda sent: Reply(body=completion()))
        cache = ClientCache([PROVIDER], transport)
        default = cache.get("alpha", 0, "m-small")
        assert cache.get("alpha", 0, "m-small") is default
        other = cache.get("alpha", 0, "m-large")
        await other.complete(PARAMS)
        assert [sent.body and sent.body["model"] for sent in transport.sent] == ["m-large"]

    def test_repr_shows_the_fingerprint_not_the_key(self):
        client, _ = client_for(lambda sent: Reply())
        assert SECRET not in repr(client)
        assert "alpha:0:WXYZ" in repr(client)


class TestProbe:
    async def test_probe_is_a_get_of_models_returning_the_status(self):
        client, transport = client_for(lambda sent: Reply(body=b"{}"))
        assert await client.probe() == 200
        assert (transport.sent[0].method, transport.sent[0].url) == (
            "GET",
            "http://alpha.test/v1/models",
        )

    async def test_probe_reports_an_error_status_instead_of_raising(self):
        client, _ = client_for(lambda sent: Reply(401, b""))
        assert await client.probe() == 401

    async def test_probe_raises_on_transport_failure(self):
        def handler(sent: Sent) -> Reply:
            raise up.UpstreamConnectionError("refused")

        client, _ = client_for(handler)
        with pytest.raises(up.UpstreamConnectionError):
            await client.probe()


class TestStream:
    async def collect(self, lines: list[bytes], failure: up.UpstreamError | None = None):
        reply = Reply(lines=lines, fail_after_lines=failure, headers={"retry-after": "1"})
        client, transport = client_for(lambda sent: reply)
        stream = await client.open_stream(PARAMS)
        chunks = [chunk async for chunk in stream.chunks()]
        await stream.aclose()
        assert transport.streams[0].closed
        return chunks, transport, stream

    async def test_asks_for_a_stream_with_usage(self):
        _, transport, stream = await self.collect([b"data: [DONE]\n"])
        assert transport.sent[0].body is not None
        assert transport.sent[0].body["stream"] is True
        assert transport.sent[0].body["stream_options"] == {"include_usage": True}
        assert stream.signal.retry_after_s == 1.0

    async def test_parses_chunks_ignoring_comments_and_blank_lines(self):
        usage = {"prompt_tokens": 2, "completion_tokens": 2}
        lines = [
            b": keep-alive\n",
            b"\n",
            b'data: {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}\n',
            event("Hel"),
            b"data:" + event("lo")[5:],
            event(finish="stop"),
            b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n",
            b"data: [DONE]\n",
            event("after done is never read"),
        ]
        chunks, _, _ = await self.collect(lines)
        assert [c.content for c in chunks] == ["", "Hel", "lo", "", ""]
        assert [c.is_first_token for c in chunks] == [False, True, True, True, False]
        assert chunks[3].finish_reason == "stop"
        assert chunks[4].usage == Usage(2, 2, 4)

    async def test_a_stream_without_done_is_an_error(self):
        with pytest.raises(up.UpstreamStreamError, match="without \\[DONE\\]"):
            await self.collect([event("partial")])

    async def test_a_transport_failure_mid_stream_propagates(self):
        with pytest.raises(up.UpstreamConnectionError):
            await self.collect([event("a")], up.UpstreamConnectionError("cut"))

    @pytest.mark.parametrize(
        "data", [b"{nope", b"[1, 2]", b'"text"', b'{"error": {"message": "overloaded"}}']
    )
    def test_malformed_or_error_events_are_stream_errors(self, data: bytes):
        with pytest.raises(up.UpstreamStreamError):
            parse_chunk(data)

    def test_odd_but_valid_events_are_empty_chunks(self):
        chunk = parse_chunk(b'{"choices": [{"delta": null}]}')
        assert (chunk.content, chunk.finish_reason, chunk.usage) == ("", None, None)


class TestUsage:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ({"prompt_tokens": 1, "completion_tokens": 2}, Usage(1, 2, 3)),
            ({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 9}, Usage(1, 2, 9)),
            ({"prompt_tokens": None}, Usage(0, 0, 0)),
            ({"prompt_tokens": "x"}, None),
            ([1], None),
            (None, None),
        ],
    )
    def test_parse_usage(self, raw: object, expected: Usage | None):
        assert parse_usage(raw) == expected


class TestBoundary:
    """aiohttp and asyncio failures leave `providers/` only as UpstreamError subclasses."""

    @pytest.mark.parametrize(
        ("raised", "kind"),
        [
            (TimeoutError(), up.UpstreamTimeout),
            (aiohttp.ServerTimeoutError(), up.UpstreamTimeout),
            (aiohttp.ClientPayloadError("cut"), up.UpstreamConnectionError),
            (aiohttp.ServerDisconnectedError(), up.UpstreamConnectionError),
            (aiohttp.ClientOSError(104, "reset"), up.UpstreamConnectionError),
            (ConnectionRefusedError(), up.UpstreamConnectionError),
        ],
    )
    def test_map_upstream_errors(self, raised: BaseException, kind: type[up.UpstreamError]):
        with pytest.raises(kind) as caught, map_upstream_errors():
            raise raised
        assert caught.value.__cause__ is raised
        assert caught.value.status is None

    def test_any_other_transport_exception_is_a_connection_failure_that_falls_over(self):
        with pytest.raises(up.UpstreamConnectionError) as caught, map_upstream_errors():
            raise ValueError("Cannot combine AUTHORIZATION header with credentials in URL")
        assert "Cannot combine" not in str(caught.value)  # type only: the text may hold URLs

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            (b'{"error": {"message": "bad model"}}', "bad model"),
            (b'{"error": "flat"}', None),
            (b"<html>oops</html>", None),
            (b"[]", None),
            (
                orjson.dumps({"error": {"message": "x" * 900}}),
                "x" * 900,
            ),  # cut by the client, after redaction
        ],
    )
    def test_upstream_message(self, body: bytes, message: str | None):
        assert upstream_message(body) == message

    def test_only_rate_limit_headers_are_kept(self):
        kept = rate_limit_headers(
            {"retry-after": "1", "set-cookie": "s", "x-ratelimit-limit-requests": "5"}
        )
        assert kept == {"retry-after": "1", "x-ratelimit-limit-requests": "5"}


class TestQuotaExceeded:
    """OpenAI's 429 `insufficient_quota` is a key out of quota, not a rate limit."""

    @pytest.mark.parametrize(
        ("body", "quota"),
        [
            (b'{"error": {"message": "x", "type": "insufficient_quota", "code": null}}', True),
            (
                b'{"error": {"message": "x", "type": "requests", "code": "insufficient_quota"}}',
                True,
            ),
            (b'{"error": {"message": "You exceeded your current quota, please check"}}', True),
            (b"You exceeded your current quota", True),
            (
                b'{"error": {"message": "Rate limit reached for requests", "type": "requests"}}',
                False,
            ),
            (b'{"error": "quota"}', False),
            (b"[]", False),
        ],
    )
    def test_the_body_says_whether_the_quota_is_out(self, body: bytes, quota: bool):
        assert up.quota_exhausted(body) is quota

    def test_only_a_429_becomes_a_quota_error(self):
        error = up.error_for_status(429, NO_SIGNAL, "out", quota=True)
        assert type(error) is up.UpstreamQuotaExceeded
        assert error.outcome is Outcome.QUOTA_EXCEEDED
        assert type(up.error_for_status(429, NO_SIGNAL, "busy")) is up.UpstreamRateLimited
        assert type(up.error_for_status(403, NO_SIGNAL, "no", quota=True)) is up.UpstreamAuthFailed
