"""A local webhook receiver on a loopback port: records JSON bodies, or hangs when told to."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


class Receiver:
    def __init__(self, *, hang: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.hang = hang
        self.release = threading.Event()
        self.arrived = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = orjson.loads(self.rfile.read(length))
                receiver.arrived += 1
                if receiver.hang:
                    receiver.release.wait(30)
                    return
                receiver.bodies.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["type"] == kind]


@contextmanager
def webhook_receiver(*, hang: bool = False) -> Iterator[Receiver]:
    receiver = Receiver(hang=hang)
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()
