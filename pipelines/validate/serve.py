"""``tailor quality report``: serve the Data Docs site (with the summary page) on loopback."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

from pipelines.settings import Settings, get_settings

SUMMARY = "tailor/index.html"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


def make_server(
    port: int | None = None, host: str | None = None, s: Settings | None = None
) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A static server over the Data Docs site; returns it and the summary page URL.

    ``port=0`` picks a free port. The summary is rebuilt first so it lists every run.
    """
    from pipelines.validate.checkpoint import site_dir
    from pipelines.validate.report import build_summary

    s = s or get_settings()
    build_summary(s)
    site = site_dir(s)
    handler = functools.partial(_Quiet, directory=str(site))
    srv = http.server.ThreadingHTTPServer((host or s.host, s.report_port if port is None else port), handler)
    h, p = srv.server_address[:2]
    return srv, f"http://{h}:{p}/{SUMMARY}"


def serve_in_thread(port: int | None = 0, s: Settings | None = None) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start :func:`make_server` in a daemon thread (tests, notebooks); call ``shutdown()`` to stop."""
    srv, url = make_server(port, s=s)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, url


def summary_path(s: Settings | None = None) -> Path:
    """The summary page file (for logs: the DAG prints it next to the served URL)."""
    from pipelines.validate.checkpoint import site_dir

    return site_dir(s) / SUMMARY
