"""Fault suite, crawl side (issue 14): one hostile mall, a robots.txt that turns 5xx, and a
crawl killed mid-write.

The hostile mall on 127.0.0.1 serves, at once: a product whose image list points at a local
file, embedded data, the cloud-metadata address, a private address and another host; a
product page redirecting off-site; a gzip bomb; a 60 MB "image"; and a robots.txt that
answers 503 from its second request on (the next crawl, once the cached copy expired). A
second server on 127.0.0.2 stands for "anywhere else" and logs every request.

After each fault: no request left the mall's scope, nothing stored before was lost, every
stored image still hashes to its name, and nothing half-written is left behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipelines.crawl import crawl
from pipelines.crawl.config import CrawlConfig, MallConfig, Politeness
from pipelines.settings import PROJECT_ROOT, Settings

pytestmark = pytest.mark.faults

UA = "TailorBot/1.0 (+https://example.org/bot)"
BIG_IMAGE = 60 * 2**20

Route = tuple[int, dict[str, str], bytes]


def _jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), rgb).save(buf, "JPEG")
    return buf.getvalue()


class Server:
    """A loopback HTTP server whose routes are fixed answers or callables; logs every path."""

    def __init__(self, host: str, routes: dict[str, Route | Callable[[], Route]]) -> None:
        self.routes, self.paths, self.lock = routes, [], threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with outer.lock:
                    outer.paths.append(self.path)
                route = outer.routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"no"))
                status, headers, body = route() if callable(route) else route
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler hung up on an oversized body: that is the point

            def log_message(self, *a) -> None:  # quiet
                pass

        self.srv = ThreadingHTTPServer((host, 0), H)
        self.base = f"http://{host}:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()


def _page(product: dict) -> bytes:
    return (
        f"<html><head><script type='application/ld+json'>{json.dumps(product)}</script></head><body></body></html>"
    ).encode()


def _product(sku: str, images: list[str]) -> dict:
    return {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": f"Tee {sku}",
        "sku": sku,
        "offers": {"@type": "Offer", "price": "19.90", "priceCurrency": "EUR"},
        "image": images,
    }


@pytest.fixture()
def hostile() -> Iterator[dict]:
    off = Server(
        "127.0.0.2",
        {
            "/img/off.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg((0, 0, 200))),
            "/p/landing": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        },
    )
    robots_hits = [0]

    def robots() -> Route:
        robots_hits[0] += 1
        if robots_hits[0] == 1:
            return 200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n"
        return 503, {"Content-Type": "text/plain"}, b"down for maintenance"

    hostile_images = [
        "/img/ok1.jpg",
        "file:///etc/passwd",
        "data:image/jpeg;base64,/9j/4AAQ",
        "http://169.254.169.254/latest/meta-data/iam",
        "http://10.0.0.7/x.jpg",
        f"{off.base}/img/off.jpg",
    ]
    big = _jpeg((9, 9, 9)) + b"\0" * (BIG_IMAGE - len(_jpeg((9, 9, 9))))
    routes: dict[str, Route | Callable[[], Route]] = {
        "/robots.txt": robots,
        "/": (
            200,
            {"Content-Type": "text/html"},
            b"<html><a href='/p/1'>a</a><a href='/p/2'>b</a><a href='/p/big'>c</a>"
            b"<a href='/p/redirect'>d</a><a href='/p/bomb'>e</a></html>",
        ),
        "/p/1": (200, {"Content-Type": "text/html"}, _page(_product("H1", hostile_images))),
        "/p/2": (200, {"Content-Type": "text/html"}, _page(_product("H2", ["/img/ok2.jpg"]))),
        "/p/big": (200, {"Content-Type": "text/html"}, _page(_product("H3", ["/img/big.jpg", "/img/ok3.jpg"]))),
        "/img/ok1.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg((200, 30, 30))),
        "/img/ok2.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg((30, 200, 30))),
        "/img/ok3.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg((30, 30, 200))),
        "/img/big.jpg": (200, {"Content-Type": "image/jpeg"}, big),
        "/p/redirect": (302, {"Location": f"{off.base}/p/landing"}, b""),
        "/p/bomb": (
            200,
            {"Content-Type": "text/html", "Content-Encoding": "gzip"},
            gzip.compress(b"<html>" + b" " * (40 * 2**20) + b"</html>", compresslevel=9),
        ),
    }
    mall = Server("127.0.0.1", routes)
    try:
        yield {"mall": mall, "off": off}
    finally:
        mall.close()
        off.close()


def _config(base: str) -> CrawlConfig:
    pol = Politeness.off(UA, max_page_bytes=2 * 2**20)  # max_image_bytes keeps its 20 MiB default
    return CrawlConfig(
        malls=[
            MallConfig(
                name="hostile",
                start_urls=[base + "/"],
                extractor="jsonld",
                politeness=pol,
                allow_private_addresses=True,
            )
        ]
    )


def _load(info: dict) -> dict[str, pd.DataFrame]:
    root = Path(info["path"])
    return {n: pd.read_parquet(root / f"{n}.parquet") for n in ("products", "images", "failures")}


def _blobs_intact(blobs: Path) -> dict[str, str]:
    """Every stored image hashes to its name; no temp file is left. Returns name -> sha256."""
    seen = {}
    for p in blobs.rglob("*"):
        if p.is_file():
            assert not p.name.startswith(".") and not p.name.endswith(".tmp"), f"left behind: {p}"
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            assert p.stem == digest, f"{p} does not hash to its name"
            seen[p.name] = digest
    return seen


def test_a_hostile_mall_then_its_robots_turning_5xx(hostile: dict, tmp_path: Path) -> None:
    mall, off = hostile["mall"], hostile["off"]
    s, state = Settings(root=tmp_path / "proj"), tmp_path / "state"
    first = _load(crawl(_config(mall.base), out=tmp_path / "one", s=s, state=state))

    # scope: nothing reached the other host, the metadata address or the private one
    assert off.paths == []
    allowed = {
        "/robots.txt",
        "/",
        "/p/1",
        "/p/2",
        "/p/big",
        "/p/redirect",
        "/p/bomb",
        "/img/ok1.jpg",
        "/img/ok2.jpg",
        "/img/ok3.jpg",
        "/img/big.jpg",
    }
    assert set(mall.paths) <= allowed, set(mall.paths) - allowed
    fails = first["failures"]
    scope = fails[fails["kind"] == "scope"]
    for needle in ("file:///etc/passwd", "data:image/jpeg", "169.254.169.254", "10.0.0.7", "127.0.0.2"):
        assert scope["url"].str.contains(needle, regex=False).any(), needle
    # size: the bomb and the 60 MB image are failures, not stored
    too_large = set(fails.loc[fails["kind"] == "too_large", "url"].str.rsplit("/", n=1).str[-1])
    assert too_large == {"bomb", "big.jpg"}, fails[["url", "kind", "reason"]]
    assert sorted(first["products"]["sku"]) == ["H1", "H2", "H3"]
    assert sorted(first["images"]["source_url"].str.rsplit("/", n=1).str[-1]) == ["ok1.jpg", "ok2.jpg", "ok3.jpg"]
    blobs = _blobs_intact(state / "blobs")
    assert len(blobs) == 3 and all(os.path.getsize(p) < 2**20 for p in (state / "blobs").rglob("*") if p.is_file())

    # a day later (the cached robots.txt expired) robots.txt answers 503: fail closed, and
    # the run proves nothing about absence: every product stays, none is marked removed
    with sqlite3.connect(state / "hostile.sqlite") as con:
        con.execute("DELETE FROM robots")
    info = crawl(_config(mall.base), out=tmp_path / "two", s=s, state=state)
    second = _load(info)
    assert sorted(second["products"]["sku"]) == ["H1", "H2", "H3"]
    assert not second["products"]["removed"].any() and set(second["products"]["status"]) == {"not_visited"}
    assert set(second["failures"]["kind"]) == {"robots"}
    assert info["stats"]["malls"]["hostile"]["incomplete_reason"].startswith("no page fetched")
    assert _blobs_intact(state / "blobs") == blobs  # the images of the first crawl, byte for byte
    assert sorted(second["images"]["sha256"]) == sorted(first["images"]["sha256"])
    assert off.paths == []


_CHILD = """
import sys
from pathlib import Path
from pipelines.crawl.config import Politeness, demo_config
from pipelines.crawl.pipeline import crawl
from pipelines.settings import Settings
crawl(demo_config({sys.argv[1]: sys.argv[2]}, Politeness.off(concurrency_per_domain=4)),
      out=Path(sys.argv[3]), s=Settings(root=Path(sys.argv[4])), state=Path(sys.argv[5]))
"""


def test_a_crawl_killed_mid_write_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    """SIGKILL while images are being stored, then the same crawl again: every product and
    image arrives once, every stored blob hashes to its name, no temp file is left, and the
    first crawl's snapshot (published before) is untouched."""
    from pipelines.crawl.pipeline import run_dir_for
    from pipelines.malls import build_demo_malls
    from tests.helpers.malls import make_fake_world, running_malls

    world = make_fake_world(tmp_path / "world", n=80, seed=12, broken=False)
    mall = build_demo_malls(world, seed=0, duplicate_share=0.0)[0]
    root, state = tmp_path / "proj", tmp_path / "state"
    s = Settings(root=root)
    with running_malls([mall]) as server:
        base = server.url(mall.name)
        run_db = run_dir_for("snap", s, state) / mall.name / "run.sqlite"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, mall.name, base, str(tmp_path / "snap"), str(root), str(state)],
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
        n, deadline = 0, time.time() + 60
        while time.time() < deadline and n < 8:
            time.sleep(0.05)
            if run_db.exists():
                with sqlite3.connect(run_db) as con:
                    try:
                        n = con.execute("SELECT COUNT(*) FROM images").fetchone()[0]
                    except sqlite3.OperationalError:
                        n = 0
        os.killpg(child.pid, signal.SIGKILL)  # the crawler and its Scrapy subprocess
        child.wait()
        assert n >= 8, "the kill came before any image was stored"
        assert not (tmp_path / "snap").exists()
        from pipelines.crawl.config import demo_config

        info = crawl(demo_config({mall.name: base}, Politeness.off()), out=tmp_path / "snap", s=s, state=state)
    d = _load(info)
    assert set(d["products"]["sku"]) == set(mall.listings), "products lost across the kill"
    assert not d["images"].duplicated(["product_id", "source_url"]).any()
    assert len(d["images"]) == sum(len(lst.images) for lst in mall.listings.values())
    blobs = _blobs_intact(state / "blobs")
    assert set(d["images"]["sha256"]) <= set(blobs.values())


def test_the_sweep_spares_a_live_writers_temp_file(tmp_path: Path) -> None:
    from pipelines.crawl.images import sweep_temp_files

    (tmp_path / "ab").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = tmp_path / "ab" / f".ab12.jpg.{os.getpid()}.x1y2z3.tmp"
    gone = tmp_path / "ab" / f".ab34.jpg.{int(dead.stdout)}.q9w8e7.tmp"
    for p in (mine, gone):
        p.write_bytes(b"half")
    assert sweep_temp_files(tmp_path) == [gone]
    assert mine.exists() and not gone.exists()
