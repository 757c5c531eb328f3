"""The public port's owner: a small reverse proxy in front of the live Bento server.

A deploy never stops the server that answers the public port. Two Bento slots run behind
this gateway (``bento-a`` and ``bento-b``, on internal ports): a candidate starts in the
idle slot, is smoke-tested there, and the switch points the gateway at it by rewriting the
upstream file (``var/deploy/upstream.json``, replaced atomically). Requests already sent to
the old slot finish there (the gateway counts them, see ``/-/gateway``); new ones go to the
new slot from that instant on, so the public port is never unbound and never answers from
a half-started server. A switch that fails before the rewrite leaves the old slot serving
untouched.

The proxy streams both bodies (a 12 MP upload is not held twice), drops hop-by-hop headers
and answers 502 (JSON ``detail``) when the live slot cannot be reached, 503 before any
release is deployed. ``GET /-/gateway`` is its own health and status: the upstream it
uses and the requests in flight per upstream.

Run: ``python -m pipelines.deploy.gateway --port 3000 --upstream-file var/deploy/upstream.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

#: RFC 9110 hop-by-hop headers (and Host, which httpx sets for the upstream): never forwarded.
#: Content-Length is kept: bodies pass through byte for byte (raw, still encoded).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
STATUS_PATH = "/-/gateway"


def write_upstream(path: Path, url: str | None, release: str | None) -> None:
    """Point the gateway at ``url`` (None: no release) by replacing ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "release": release}))
    os.replace(tmp, path)  # a reader sees the old or the new upstream, never a mix


def read_upstream(path: Path) -> dict[str, Any]:
    """``{"url": ..., "release": ...}`` from the upstream file (both None when absent)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"url": None, "release": None}


class _Upstream:
    """The upstream file, re-read only when its (mtime, inode) changes: one stat per request."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._key: tuple[int, int] | None = None
        self.value: dict[str, Any] = {"url": None, "release": None}

    def current(self) -> dict[str, Any]:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_ino)
        except OSError:
            key = None
        if key != self._key:
            self._key = key
            self.value = read_upstream(self.path) if key else {"url": None, "release": None}
        return self.value


def create_app(upstream_file: Path, timeout_s: float = 300.0) -> Any:
    """The gateway as an ASGI app (Starlette) forwarding every path to the live upstream."""
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    upstream = _Upstream(upstream_file)
    in_flight: Counter[str] = Counter()
    served: Counter[str] = Counter()
    # one connection pool for every upstream; no pool limit: the Bento server bounds its own work
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=5.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )

    async def status(_: Request) -> JSONResponse:
        up = upstream.current()
        return JSONResponse(
            {
                "upstream": up.get("url"),
                "release": up.get("release"),
                "in_flight": {k: v for k, v in in_flight.items() if v},
                "served": dict(served),
            }
        )

    async def proxy(request: Request) -> Any:
        up = upstream.current()
        base = up.get("url")
        if not base:
            return JSONResponse({"detail": "no release is deployed yet"}, status_code=503)
        url = httpx.URL(base.rstrip("/") + request.url.path, query=request.url.query.encode())
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("x-forwarded-for", request.client.host if request.client else ""))
        has_body = request.method not in ("GET", "HEAD", "OPTIONS")
        req = client.build_request(request.method, url, headers=headers, content=request.stream() if has_body else None)
        in_flight[base] += 1
        try:
            resp = await client.send(req, stream=True)
        except httpx.HTTPError as exc:
            in_flight[base] -= 1
            return JSONResponse({"detail": f"the live release is unreachable ({type(exc).__name__})"}, status_code=502)

        async def done() -> None:
            await resp.aclose()
            in_flight[base] -= 1
            served[base] += 1

        out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(
            resp.aiter_raw(), status_code=resp.status_code, headers=out_headers, background=BackgroundTask(done)
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return Starlette(
        routes=[Route(STATUS_PATH, status, methods=["GET"]), Route("/{path:path}", proxy, methods=methods)],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the gateway with uvicorn (one process, one event loop)."""
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-file", type=Path, required=True)
    args = ap.parse_args(argv)
    uvicorn.run(
        create_app(args.upstream_file),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )


if __name__ == "__main__":
    main()
