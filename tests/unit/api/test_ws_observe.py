"""Websocket requests: an id per frame on every event, recorded like an HTTP chat request."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.api.ws_observe import WsRequest, frame_request_id
from app.metrics import Metrics
from app.observability.hub import Observability
from app.observability.logs import request_id_var


def _registry(hub: Observability) -> CollectorRegistry:
    hub.flush()  # what is batched, and the batch's sums, reach prometheus-client
    assert hub.metrics is not None
    return hub.metrics.registry


@pytest.mark.parametrize("sent", ["trace-1", "x" * 128])
def test_a_usable_frame_id_is_kept(sent: str):
    assert frame_request_id(sent) == sent


@pytest.mark.parametrize("sent", [None, 7, "", "x" * 129, "caf\u00e9", "a\nb", ["x"]])
def test_anything_else_gets_a_generated_id(sent: object):
    made = frame_request_id(sent)
    assert len(made) == 32
    assert made != frame_request_id(sent)


def test_every_event_carries_the_id_and_the_request_is_recorded():
    hub = Observability([], Metrics())
    seen = WsRequest("ann")
    seen.adopt({"request_id": "frame-1", "messages": []})
    assert request_id_var.get() == "frame-1"  # log lines written meanwhile carry it
    start = {"type": "start", "provider": "alpha", "key_index": 0, "path": "A", "model": "m",
             "attempts": [{"provider": "alpha"}]}  # fmt: skip
    events = [seen.tag(e) for e in (start, {"type": "chunk"}, {"type": "done"})]
    assert [e["request_id"] for e in events] == ["frame-1"] * 3
    seen.finish(hub)
    text = generate_latest(_registry(hub)).decode()
    assert (
        'keypool_requests_total{path="A",provider="alpha",route="/api/chat/ws",status="200"} 1.0'
        in text
    )
    assert seen.attempts == 2
    assert hub.summary.summary("5m")["requests"] == 1


def test_an_error_event_sets_the_status_and_a_closed_socket_is_499():
    hub = Observability([], Metrics())
    failed = WsRequest(None)
    failed.tag({"type": "error", "status": 503, "error": {"type": "all_keys_failed"}})
    failed.finish(hub)
    gone = WsRequest(None)
    gone.finish(hub, gone=True)
    assert (failed.status, gone.status) == (503, 499)
    assert [e["status"] for e in hub.errors.latest()] == [499, 503]
