"""A recording stand-in for SendGrid's Mail Send endpoint on 127.0.0.1, with programmable faults.

Tests (and bench/) start it, point `[sendgrid] api_host` at it and then assert
what it received: every request is recorded with its body, and `received`
counts, per letter id, the non-sandbox requests that reached the handler.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Action:
    """What the server does with one request."""

    kind: str = "accept"           # accept | status | cut | slow
    status: int = 202
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0             # seconds before answering (latency, or slower than the client's timeout)


ACCEPT = Action()


def status(code: int, body: dict | str | None = None, **headers) -> Action:
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or "").encode()
    return Action("status", code, raw, {k.replace("_", "-"): str(v) for k, v in headers.items()})


def throttle(reset_in: float) -> Action:
    return status(429, {"errors": [{"message": "too many requests"}]},
                  X_RateLimit_Limit=600, X_RateLimit_Remaining=0, X_RateLimit_Reset=int(time.time() + reset_in))


CUT = Action("cut")


def slow(seconds: float) -> Action:
    return Action("accept", delay=seconds)


@dataclass
class Request:
    at: float
    path: str
    headers: dict
    body: dict
    action: str

    @property
    def letter_id(self) -> str | None:
        return (self.body.get("custom_args") or {}).get("letter_id")

    @property
    def sandbox(self) -> bool:
        return bool(((self.body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"))

    @property
    def to(self) -> str:
        return self.body["personalizations"][0]["to"][0]["email"]


class MockGrid:
    """`with MockGrid(api_key="k") as grid: ... grid.url ... grid.received`."""

    def __init__(self, api_key: str = "SG.test-key", latency: float = 0.0,
                 behave: Callable[[int, dict], Action] | None = None, port: int = 0):
        self.api_key = api_key
        self.latency = latency
        self.behave = behave or (lambda n, body: ACCEPT)
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._count = itertools.count(0)
        self._port = port
        self.server: ThreadingHTTPServer | None = None
        self._accepted_at: dict = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "MockGrid":
        grid = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                grid._handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256

            def process_request(self, request, client_address):
                # Latency counts from the accept: the time our Python takes to start a
                # thread and parse the request is part of it, not added to it.
                grid._accepted_at[client_address] = time.monotonic()
                super().process_request(request, client_address)

        self.server = Server(("127.0.0.1", self._port), Handler)
        self._port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> "MockGrid":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # -- what arrived ------------------------------------------------------------------------

    def deliveries(self) -> list[Request]:
        """Non-sandbox requests that reached the handler (whatever it answered)."""
        with self.lock:
            return [r for r in self.requests if not r.sandbox]

    @property
    def received(self) -> Counter:
        """letter id -> how many non-sandbox requests for it arrived."""
        return Counter(r.letter_id for r in self.deliveries())

    @property
    def accepted(self) -> Counter:
        """letter id -> how many times it was answered 202 (or left without an answer: cut or slow)."""
        return Counter(r.letter_id for r in self.deliveries() if r.action in ("accept", "cut", "slow"))

    # -- the handler ------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        arrived = self._accepted_at.pop(h.client_address, None) or time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        if h.path != "/v3/mail/send":
            self._answer(h, 404, b'{"errors":[{"message":"not found"}]}')
            return
        if h.headers.get("Authorization") != f"Bearer {self.api_key}":
            self._record(h, body, "unauthorized")
            self._answer(h, 401, json.dumps({"errors": [{"message": "The provided authorization grant is "
                                                          "invalid, expired, or revoked"}]}).encode())
            return
        sandbox = bool(((body.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"))
        action = ACCEPT if sandbox else self.behave(next(self._count), body)
        kind = action.kind if not (action.kind == "accept" and action.delay) else "slow"
        self._record(h, body, kind)
        if self.latency:
            time.sleep(max(0.0, arrived + self.latency - time.monotonic()))
        if action.delay:
            time.sleep(action.delay)
        if action.kind == "cut":
            # The request arrived; the connection dies before any answer.
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            h.close_connection = True
            return
        if action.kind == "status":
            self._answer(h, action.status, action.body, action.headers)
            return
        self._answer(h, 200 if sandbox else 202, b"", {"X-Message-Id": f"mock-{next(self._ids)}"})

    def _record(self, h, body: dict, action: str) -> None:
        with self.lock:
            self.requests.append(Request(time.time(), h.path, dict(h.headers), body, action))

    @staticmethod
    def _answer(h, code: int, body: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(code)
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            if body:
                h.send_header("Content-Type", "application/json")
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client gave up (its timeout): nothing to answer


def main() -> None:
    """Serve on its own: `python tests/mockgrid.py --port 0 --latency 0.05 --api-key K` prints the URL."""
    import argparse
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--api-key", default="SG.test-key")
    args = parser.parse_args()
    grid = MockGrid(api_key=args.api_key, latency=args.latency, port=args.port).start()
    print(grid.url, flush=True)
    try:
        sys.stdin.read()  # runs until its parent closes our stdin
    finally:
        print(len(grid.deliveries()), flush=True)
        grid.stop()


if __name__ == "__main__":
    main()
