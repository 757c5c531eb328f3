"""The crawler against hostile input (issue 14): scope and size caps (findings 1-3), image store (13).

The hostile mall on 127.0.0.1 serves one good product whose image list also points at a
local file, embedded data, the cloud metadata address and another host (127.0.0.2, a
second server that logs every request it gets); a product page that redirects off-site;
a gzip bomb; and an oversized sitemap entry. Nothing may reach 127.0.0.2, the bomb must
not be decompressed past its cap, and every refusal is a failure row with its reason.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipelines.crawl import crawl
from pipelines.crawl.config import CrawlConfig, MallConfig, Politeness
from pipelines.crawl.scope import non_public, refusal
from pipelines.settings import Settings

UA = "TailorBot/1.0 (+https://example.org/bot)"


# ------------------------------------------------------------------------------- units
@pytest.mark.parametrize(
    "url, hosts, private, why",
    [
        ("file:///dev/zero", ["127.0.0.1"], True, "scheme 'file'"),
        ("data:image/png;base64,AAAA", ["127.0.0.1"], True, "scheme 'data'"),
        ("ftp://127.0.0.1/x.jpg", ["127.0.0.1"], True, "scheme 'ftp'"),
        ("s3://bucket/x.jpg", ["127.0.0.1"], True, "scheme 's3'"),
        ("http://169.254.169.254/latest/meta-data", ["shop.example"], False, "outside the mall's allowed hosts"),
        ("http://127.0.0.1:5000/api", ["shop.example"], False, "outside the mall's allowed hosts"),
        ("http://127.0.0.1:8001/p/1", ["127.0.0.1"], False, "non-public address"),
        ("http://[::1]:8001/p/1", ["::1"], False, "non-public address"),
        ("http://10.1.2.3/x.jpg", ["10.1.2.3"], False, "non-public address"),
        ("http://127.0.0.1:8001/p/1", ["127.0.0.1"], True, None),
        ("https://cdn.shop.example/a.jpg", ["shop.example"], False, None),
        ("https://evilshop.example/a.jpg", ["shop.example"], False, "outside"),
    ],
)
def test_refusal_rules(url: str, hosts: list[str], private: bool, why: str | None) -> None:
    got = refusal(url, hosts, private)
    assert (got is None) if why is None else (got is not None and why in got), got


def test_a_name_that_resolves_to_a_private_address_is_refused() -> None:
    assert "non-public" in refusal("http://shop.example/x", ["shop.example"], False, ["192.168.1.5"])
    assert refusal("http://shop.example/x", ["shop.example"], False, ["93.184.215.14"]) is None
    assert non_public("::ffff:127.0.0.1") and non_public("0.0.0.0") and not non_public("8.8.8.8")


def test_image_hosts_and_private_switch_are_config() -> None:
    m = MallConfig(
        name="m",
        start_urls=["https://shop.example/"],
        extractor="jsonld",
        politeness=Politeness(user_agent=UA),
        image_hosts=["cdn.example"],
    )
    assert m.image_hosts == ["cdn.example"] and m.allow_private_addresses is False
    assert m.politeness.max_page_bytes == 5 * 2**20 and m.politeness.max_robots_bytes == 512 * 2**10


# ------------------------------------------------------------------------- hostile mall
def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


class _Log:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def add(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)


def _serve(host: str, routes: dict[str, tuple[int, dict[str, str], bytes]], log: _Log) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            log.add(self.path)
            status, headers, body = routes.get(self.path, (404, {"Content-Type": "text/plain"}, b"no"))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v.format(**ports))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:  # quiet
            pass

    srv = ThreadingHTTPServer((host, 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


ports: dict[str, int] = {}


@pytest.fixture(scope="module")
def hostile() -> Iterator[dict]:
    """The hostile mall (127.0.0.1) and an off-site server (127.0.0.2) that must stay untouched."""
    off_log, mall_log = _Log(), _Log()
    off = _serve(
        "127.0.0.2",
        {
            "/img/off.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg()),
            "/p/2": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        },
        off_log,
    )
    ports["off"] = off.server_address[1]
    html = "<html><head><script type='application/ld+json'>{}</script></head><body></body></html>"
    good = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": "Red tee",
        "sku": "G1",
        "offers": {"@type": "Offer", "price": "19.90", "priceCurrency": "EUR"},
        "image": [
            "/img/ok.jpg",
            "file:///etc/passwd",
            "data:image/jpeg;base64,/9j/4AAQ",
            "http://169.254.169.254/latest/meta-data/iam",
            f"http://127.0.0.2:{ports['off']}/img/off.jpg",
        ],
    }
    bomb = gzip.compress(b"<html>" + b" " * (40 * 2**20) + b"</html>", compresslevel=9)
    routes = {
        "/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n"),
        "/": (
            200,
            {"Content-Type": "text/html"},
            b"<html><a href='/p/1'>a</a><a href='/p/redirect'>b</a><a href='/p/bomb'>c</a></html>",
        ),
        "/p/1": (200, {"Content-Type": "text/html"}, html.format(json.dumps(good)).encode()),
        "/img/ok.jpg": (200, {"Content-Type": "image/jpeg"}, _jpeg()),
        "/p/redirect": (302, {"Location": "http://127.0.0.2:{off}/p/2"}, b""),
        "/p/bomb": (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, bomb),
    }
    mall = _serve("127.0.0.1", routes, mall_log)
    base = f"http://127.0.0.1:{mall.server_address[1]}"
    try:
        yield {"base": base, "off_log": off_log, "mall_log": mall_log}
    finally:
        mall.shutdown()
        off.shutdown()


def _crawl(hostile: dict, tmp: Path, **mall_kw) -> dict[str, pd.DataFrame]:
    pol = Politeness.off(UA, max_page_bytes=2 * 2**20)
    kw = {"allow_private_addresses": True, **mall_kw}
    cfg = CrawlConfig(
        malls=[MallConfig(name="hostile", start_urls=[hostile["base"] + "/"], extractor="jsonld", politeness=pol, **kw)]
    )
    info = crawl(cfg, out=tmp / "snap", s=Settings(root=tmp / "proj"), state=tmp / "state")
    root = Path(info["path"])
    return {n: pd.read_parquet(root / f"{n}.parquet") for n in ("products", "images", "failures")} | {"info": info}


@pytest.fixture(scope="module")
def hostile_crawl(hostile: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _crawl(hostile, tmp_path_factory.mktemp("hostile"))


def test_off_site_and_local_urls_are_never_requested(hostile: dict, hostile_crawl: dict) -> None:
    assert hostile["off_log"].paths == []  # neither the off-site image nor the redirect target
    fails = hostile_crawl["failures"]
    scope = fails[fails["kind"] == "scope"]
    for needle in ("file:///etc/passwd", "data:image/jpeg", "169.254.169.254", "127.0.0.2"):
        assert scope["url"].str.contains(needle, regex=False).any(), (needle, fails[["url", "kind"]])
    # the redirect is refused at its off-site hop and recorded under the page that redirected
    red = scope[scope["url"].str.endswith("/p/redirect")]
    assert len(red) == 1 and "127.0.0.2" in red.iloc[0]["reason"]


def test_only_in_scope_images_are_stored(hostile_crawl: dict) -> None:
    prods, imgs = hostile_crawl["products"], hostile_crawl["images"]
    assert len(prods) == 1
    assert list(imgs["source_url"].str.rsplit("/", n=1).str[-1]) == ["ok.jpg"]


def test_a_gzip_bomb_is_cut_at_the_page_cap(hostile_crawl: dict) -> None:
    fails = hostile_crawl["failures"]
    bomb = fails[fails["url"].str.endswith("/p/bomb")]
    assert len(bomb) == 1 and bomb.iloc[0]["kind"] == "too_large", bomb.to_dict("records")


def test_a_loopback_mall_needs_the_explicit_switch(hostile: dict, tmp_path: Path) -> None:
    before = len(hostile["mall_log"].paths)
    d = _crawl(hostile, tmp_path, allow_private_addresses=False)
    assert len(hostile["mall_log"].paths) == before  # not even robots.txt was requested
    assert len(d["products"]) == 0
    assert set(d["failures"]["kind"]) == {"scope"}
    assert d["info"]["stats"]["malls"]["hostile"]["requests"] == 0


# ------------------------------------------------------------------ image store (finding 13)
def test_blob_store_is_safe_across_threads_and_heals_a_corrupt_blob(tmp_path: Path, monkeypatch) -> None:
    """Threads of one crawl process storing the same image must not share a temp file (the
    rename is slowed down here to open the window), and a stored blob whose bytes no longer
    match its name is rewritten, not reused."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.crawl import images as im

    data = _jpeg()
    info = im.decode(data)
    real_replace = os.replace

    def slow_replace(a, b):
        time.sleep(0.05)
        real_replace(a, b)

    monkeypatch.setattr(im.os, "replace", slow_replace)
    barrier = threading.Barrier(8)

    def store(_: int) -> Path:
        barrier.wait()
        return im.store_blob(tmp_path, info, data)

    with ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(store, range(8)))
    (path,) = paths
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    path.write_bytes(data[:100])  # corrupted on disk
    assert im.store_blob(tmp_path, info, data).read_bytes() == data
    with pytest.raises(ValueError, match="does not hash"):
        im.store_blob(tmp_path, info, data + b"x")
