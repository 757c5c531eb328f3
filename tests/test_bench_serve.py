"""``tailor bench serve``'s measuring parts: open-loop timing and fair server settings."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.deploy.bench import load_run, server_settings


class _OneAtATime(BaseHTTPRequestHandler):
    """A /search that serves one request at a time in 0.1 s: 10 requests per second at most."""

    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            time.sleep(0.1)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _OneAtATime)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_load_run_times_from_when_each_request_was_due(slow_server: str) -> None:
    # 20 requests/s for 1 s against a server that does 10/s, from a client that keeps 2 in
    # flight: the backlog grows by 10 a second, so the last requests wait about a second.
    # Timed from when a client thread picks a request up, each would look like 0.1-0.2 s.
    out = load_run(slow_server, [b"x"], rate=20.0, duration_s=1.0, max_in_flight=2)
    assert out["requests"] == 20 and out["errors"] == 0
    assert out["p50_ms"] >= 400, out
    assert out["p99_ms"] >= 900, out


def test_load_run_at_a_rate_the_server_holds_has_no_queueing(slow_server: str) -> None:
    out = load_run(slow_server, [b"x"], rate=5.0, duration_s=1.0)
    assert out["requests"] == 5 and out["errors"] == 0
    assert 100 <= out["p50_ms"] < 400, out


def test_unbatched_servers_include_the_batched_limit_and_every_other() -> None:
    assert server_settings(2, (1, 2, 4)) == [
        ("batched-w2", True, 2),
        ("unbatched-w1", False, 1),
        ("unbatched-w2", False, 2),
        ("unbatched-w4", False, 4),
    ]
    # The equal-limit unbatched server is always there, even when not asked for.
    assert ("unbatched-w3", False, 3) in server_settings(3, (1,))
