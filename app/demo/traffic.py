"""Gentle demo traffic (about two requests a second) so the dashboard has something to show.

Runs in a daemon thread next to `keypool demo`; KEYPOOL_DEMO_TRAFFIC=0 turns it off.
"""

from __future__ import annotations

import itertools
import threading

import httpx

HELLO = [{"role": "user", "content": "Hello from the demo traffic!"}]
REQUESTS: tuple[tuple[str, dict[str, object], dict[str, str]], ...] = (
    ("/api/chat", {"messages": HELLO}, {"X-User-Id": "alice"}),
    ("/api/chat", {"messages": HELLO, "model": "fake-large"}, {"X-User-Id": "bob"}),
    ("/api/chat/stream", {"messages": HELLO}, {"X-User-Id": "carol"}),
    ("/v1/chat/completions", {"messages": HELLO, "model": "auto"}, {}),
    ("/api/chat", {"messages": HELLO, "model": "no-such-model"}, {}),  # an error to show
    ("/api/chat", {"messages": HELLO, "provider": "beta"}, {"X-User-Id": "dave"}),
)


class DemoTraffic:
    def __init__(self, base_url: str, interval_s: float = 0.5) -> None:
        self.base_url = base_url
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)

    def start(self) -> DemoTraffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            if not self._wait_until_up(client):
                return
            for path, body, headers in itertools.cycle(REQUESTS):
                if self._stop.wait(self.interval_s):
                    return
                try:
                    client.post(path, json=body, headers=headers).read()
                except httpx.HTTPError:
                    continue

    def _wait_until_up(self, client: httpx.Client) -> bool:
        while not self._stop.wait(0.2):
            try:
                if client.get("/healthz").status_code == 200:
                    return True
            except httpx.HTTPError:
                continue
        return False
