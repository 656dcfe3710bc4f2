"""Fixtures: a tiny OpenAI-style SSE completions server (stdlib only, loopback)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    token_delay = 0.005
    fail_every = 0  # every n-th request answers HTTP 500
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _Handler.lock:
            _Handler.count += 1
            n = _Handler.count
        if self.fail_every and n % self.fail_every == 0:
            payload = b'{"error": "boom"}'
            self.send_response(500)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(int(body["max_tokens"])):
            time.sleep(self.token_delay)
            self._chunk(f"data: {json.dumps({'choices': [{'index': 0, 'text': f' t{i}'}]})}\n\n")
        self._chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


def serve(fail_every: int = 0) -> tuple[ThreadingHTTPServer, str]:
    handler = type("H", (_Handler,), {"fail_every": fail_every, "count": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def sse_server():
    """Start a server whose every 5th request fails with HTTP 500; yields its base URL."""
    server, url = serve(fail_every=5)
    yield url
    server.shutdown()
