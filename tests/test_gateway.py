"""The deploy gateway (issue 14, finding 5): the public port's reverse proxy moves between
two upstreams with no failed request, lets in-flight requests finish on the old one, passes
bodies through unchanged, and says 502/503 plainly when there is nothing to reach."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from pipelines import services as svcs
from pipelines.deploy.gateway import read_upstream, write_upstream
from pipelines.deploy.release import gateway_service, upstream_file
from pipelines.services import free_port
from pipelines.settings import Settings
from tests.helpers import wait_until


class _Backend(BaseHTTPRequestHandler):
    """GET /who -> the server's name; GET /slow -> the name after 1.5 s; POST /echo ->
    sha256 and length of the body it received."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        self._send(self.server.name.encode())  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(f"{hashlib.sha256(body).hexdigest()} {len(body)}".encode())


def _backend(name: str) -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    srv.name = name  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture()
def gateway(tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    s = Settings(var_dir=tmp_path / "var", bento_port=free_port())
    svc = gateway_service(s)
    svcs.start(svc, s)
    try:
        yield s, upstream_file(s)
    finally:
        svcs.stop(svc, s)


def test_no_release_is_503_then_a_dead_upstream_is_502(gateway) -> None:
    s, up = gateway
    r = httpx.get(s.url(s.bento_port, "/search"), timeout=10)
    assert r.status_code == 503 and "no release" in r.json()["detail"]
    write_upstream(up, f"http://127.0.0.1:{free_port()}", "gone")
    r = httpx.get(s.url(s.bento_port, "/info"), timeout=10)
    assert r.status_code == 502 and "unreachable" in r.json()["detail"]


def test_moving_between_upstreams_fails_no_request(gateway) -> None:
    """Polled every 10 ms while the upstream flips five times: every answer is a 200 from
    one of the two servers; a slow request sent before a flip finishes on its old server."""
    s, up = gateway
    (a, url_a), (b, url_b) = _backend("A"), _backend("B")
    try:
        write_upstream(up, url_a, "rel-a")
        statuses: Counter[int] = Counter()
        names: Counter[str] = Counter()
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.get(s.url(s.bento_port, "/who"))
                        statuses[r.status_code] += 1
                        names[r.text] += 1
                    except httpx.HTTPError as exc:
                        statuses[type(exc).__name__] += 1  # type: ignore[index]
                    time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.3)
        slow: dict[str, str] = {}
        t = threading.Thread(target=lambda: slow.update(name=httpx.get(s.url(s.bento_port, "/slow"), timeout=10).text))
        t.start()
        gw = wait_until(
            lambda: (g := httpx.get(s.url(s.bento_port, "/-/gateway"), timeout=5).json())["in_flight"].get(url_a) and g,
            timeout_s=30,
            what="the slow request in flight on A",
        )
        assert gw["in_flight"].get(url_a, 0) >= 1 and url_b not in gw["in_flight"]
        for i in range(5):
            write_upstream(up, url_b if i % 2 == 0 else url_a, f"rel-{i}")
            time.sleep(0.3)
        t.join()
        stop.set()
        poller.join()
        assert slow["name"] == "A"
        assert set(statuses) == {200}, statuses
        assert names["A"] > 10 and names["B"] > 10
        assert read_upstream(up)["url"] == url_b
    finally:
        a.shutdown()
        b.shutdown()


def test_bodies_pass_through_unchanged(gateway) -> None:
    s, up = gateway
    srv, url = _backend("A")
    try:
        write_upstream(up, url, "rel")
        body = bytes(range(256)) * 40_000  # ~10 MB, every byte value
        r = httpx.post(s.url(s.bento_port, "/echo?x=1"), content=body, timeout=30)
        assert r.status_code == 200
        assert r.text == f"{hashlib.sha256(body).hexdigest()} {len(body)}"
    finally:
        srv.shutdown()
