"""Real HTTP servers for the demo malls (one threaded stdlib server per mall, on loopback).

The server keeps what belongs to one running instance: the request log (for politeness
tests), and the fault counters (so "the first k requests fail" restarts with each server).
Everything else lives in :class:`~pipelines.malls.site.Mall`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipelines.malls.faults import FaultState
from pipelines.malls.site import Mall


@dataclass(frozen=True)
class LoggedRequest:
    """One answered request."""

    t: float  # time.monotonic() when the request arrived
    wall: float  # time.time() when the request arrived
    method: str
    path: str  # request target, query included
    status: int  # 0 = connection dropped
    user_agent: str


class RequestLog:
    """Thread-safe log of one mall's requests, with counters by path and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []

    def add(self, entry: LoggedRequest) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[LoggedRequest]:
        """A snapshot copy of every logged request, oldest first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every logged request."""
        with self._lock:
            self._entries.clear()

    def count(self, path: str | None = None, status: int | None = None, prefix: str | None = None) -> int:
        """Requests matching an exact ``path``, a path ``prefix`` and/or a ``status``."""
        return sum(
            1
            for e in self.entries
            if (path is None or e.path == path)
            and (status is None or e.status == status)
            and (prefix is None or e.path.startswith(prefix))
        )

    def by_path(self) -> Counter[str]:
        """Request count per path."""
        return Counter(e.path for e in self.entries)

    def by_status(self) -> Counter[int]:
        """Request count per status."""
        return Counter(e.status for e in self.entries)

    def by_path_status(self) -> Counter[tuple[str, int]]:
        """Request count per (path, status)."""
        return Counter((e.path, e.status) for e in self.entries)

    def timestamps(self, prefix: str = "") -> list[float]:
        """Arrival times (monotonic seconds) of requests whose path starts with ``prefix``."""
        return [e.t for e in self.entries if e.path.startswith(prefix)]

    def request_rate(self, prefix: str = "") -> float:
        """Observed requests per second between the first and last matching request."""
        ts = self.timestamps(prefix)
        if len(ts) < 2 or ts[-1] == ts[0]:
            return 0.0
        return (len(ts) - 1) / (ts[-1] - ts[0])


class _MallHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, which a crawler (and the benchmark) relies on.
    protocol_version = "HTTP/1.1"
    server_version = "TailorMall/1.0"
    # Headers and body go out in separate writes; without TCP_NODELAY a keep-alive client
    # waits for the delayed ACK (~40 ms) on every request, capping throughput near 25 req/s.
    disable_nagle_algorithm = True
    server: _MallHTTPServer

    def _serve(self, head_only: bool) -> None:
        arrived, wall = time.monotonic(), time.time()
        srv = self.server
        host = self.headers.get("Host") or f"{srv.server_address[0]}:{srv.server_address[1]}"
        try:
            resp = srv.mall.handle(self.command, self.path, self.headers, host, srv.fault_state)
        except Exception as exc:  # a bug must show up as a 500, never a hung crawler
            srv.log.add(LoggedRequest(arrived, wall, self.command, self.path, 500, ""))
            self.send_error(500, explain=repr(exc))
            return
        ua = self.headers.get("User-Agent", "")
        srv.log.add(LoggedRequest(arrived, wall, self.command, self.path, resp.status, ua))
        if resp.drop:
            # "unreachable": close without a byte of answer, like a dead host.
            self.close_connection = True
            return
        if resp.delay_s:
            time.sleep(resp.delay_s)
        self.send_response(resp.status)
        for k, v in resp.all_headers().items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if not head_only and resp.body:
            self.wfile.write(resp.body)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._serve(head_only=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the RequestLog is the log; stderr noise would drown test output


class _MallHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], mall: Mall) -> None:
        super().__init__(addr, _MallHandler)
        self.mall = mall
        self.log = RequestLog()
        self.fault_state = FaultState()


class MallServer:
    """One real HTTP server per mall on consecutive ports (``base_port=0``: free ports).

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, malls: list[Mall], host: str = "127.0.0.1", base_port: int = 0) -> None:
        names = [m.name for m in malls]
        if len(set(names)) != len(names):
            raise ValueError(f"mall names must be unique: {names}")
        self.malls: dict[str, Mall] = {m.name: m for m in malls}
        self.host = host
        self.base_port = base_port
        self._servers: dict[str, _MallHTTPServer] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> MallServer:
        """Bind and start every server (idempotent); returns self."""
        if self._servers:
            return self
        try:
            for i, (name, mall) in enumerate(self.malls.items()):
                port = self.base_port + i if self.base_port else 0
                srv = _MallHTTPServer((self.host, port), mall)
                self._servers[name] = srv
                t = threading.Thread(
                    target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name=f"mall-{name}", daemon=True
                )
                t.start()
                self._threads.append(t)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server and close its socket."""
        for srv in self._servers.values():
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> MallServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[Mall]:
        return iter(self.malls.values())

    def __getitem__(self, name: str) -> Mall:
        return self.malls[name]

    def port(self, name: str) -> int:
        """The port mall ``name`` listens on."""
        return int(self._servers[name].server_address[1])

    def url(self, name: str, path: str = "") -> str:
        """``http://HOST:PORT`` of mall ``name`` (plus ``path``)."""
        return f"http://{self.host}:{self.port(name)}{path}"

    def urls(self) -> dict[str, str]:
        """Base URL of every mall."""
        return {n: self.url(n) for n in self.malls}

    def log(self, name: str) -> RequestLog:
        """The request log of mall ``name`` on this server."""
        return self._servers[name].log

    def fault_state(self, name: str) -> FaultState:
        """This server's fault counters of mall ``name``."""
        return self._servers[name].fault_state

    def set_revision(self, name: str, revision: int) -> None:
        """Switch mall ``name`` to ``revision``."""
        self.malls[name].set_revision(revision)

    def reset(self) -> None:
        """Back to a fresh state: revision 0, normal robots, empty logs, fault counters reset."""
        for name, mall in self.malls.items():
            mall.set_revision(0)
            mall.robots_status, mall.robots_redirects = 200, 0
            self._servers[name].log.clear()
            self._servers[name].fault_state.reset()


def benchmark_requests(url: str, n: int = 1000, threads: int = 4) -> float:
    """Requests per second for ``n`` GETs of ``url`` over keep-alive connections."""
    import requests

    per = max(1, n // threads)

    def worker() -> None:
        with requests.Session() as s:
            for _ in range(per):
                s.get(url, timeout=10).content  # noqa: B018 - read the body

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return per * threads / (time.perf_counter() - t0)


def serve_forever(
    world: Path | None, photos: Path | None, labels: Path | None, host: str, base_port: int, faults: bool, seed: int
) -> None:
    """Serve the demo malls (from ``world``) and/or the photo mall until Ctrl-C.

    Prints one ``name -> URL`` line per mall. Ports are consecutive from ``base_port``
    in the order demo-jsonld, demo-microdata, demo-css, photos (as in config/malls.yaml).
    """
    from pipelines.malls.demo import build_demo_malls
    from pipelines.malls.photos import HOLDOUT_SHARE, build_photo_mall

    malls: list[Mall] = []
    if world is not None:
        malls += build_demo_malls(Path(world), seed=seed, faults=faults)
    if photos is not None:
        # a few photos stay out of every catalog: the endpoint is checked on them
        malls.append(build_photo_mall(Path(photos), labels, seed=seed, holdout=HOLDOUT_SHARE))
    if not malls:
        raise ValueError("nothing to serve: give a world and/or a photos folder")
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    old = signal.signal(signal.SIGTERM, _on_signal)
    with MallServer(malls, host=host, base_port=base_port) as server:
        for name, url in server.urls().items():
            print(f"{name} -> {url}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    signal.signal(signal.SIGTERM, old)
