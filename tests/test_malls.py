"""Demo malls: markup, navigation, robots, sitemaps, caching, revisions, faults, photo mall.

Every test talks to real HTTP servers on loopback. Most use a tiny fabricated world
(fast, independent of the generator); the ``small_world`` tests repeat the key checks on
a real generated world.
"""

from __future__ import annotations

import io
import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import extruct
import parsel
import pytest
import requests
import yaml
from PIL import Image

from pipelines.malls import (
    DEMO_MALLS,
    FaultConfig,
    Mall,
    MallServer,
    build_demo_malls,
    build_photo_mall,
    duplicate_products,
    load_world,
)
from pipelines.malls.markup import CSS_SELECTORS
from pipelines.settings import PROJECT_ROOT
from tests.helpers import SHARED_PHOTOS
from tests.helpers.malls import make_fake_world, running_malls

TIMEOUT = 10


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def clean(fake_world: Path):
    """Clean demo malls over the fake world (read-only tests only)."""
    with running_malls(build_demo_malls(fake_world, seed=0)) as server:
        yield server


@pytest.fixture
def fresh(fake_world: Path):
    """Fresh clean malls for tests that change revision or robots mode."""
    with running_malls(build_demo_malls(fake_world, seed=0)) as server:
        yield server


@pytest.fixture
def faulty(fake_world: Path):
    """Fresh all-faults malls (fault counters start at zero)."""
    with running_malls(build_demo_malls(fake_world, seed=0, faults=True)) as server:
        yield server


def world_products(world: Path) -> dict[str, dict]:
    return {p["product_id"]: p for p in load_world(world)[1]}


def css_config() -> dict:
    cfg = yaml.safe_load((PROJECT_ROOT / "config" / "malls.yaml").read_text())
    return next(m for m in cfg["malls"] if m["name"] == "demo-css")


def listed_attrs(prod: dict) -> dict[str, str]:
    listed = prod.get("listed") or {}
    attrs = listed.get("attributes", prod["attributes"]) or {}
    return {k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in attrs.items() if v is not None}


def listed_category(prod: dict) -> str:
    return (prod.get("listed") or {}).get("category", prod["category"])


def expected_title(mall: Mall, prod: dict) -> str:
    # The second mall's copy of a shared product formats the title differently.
    lst = mall.listings[prod["product_id"]]
    return prod["title"] if lst.primary else lst.title


def walk_listings(base: str, session: requests.Session) -> set[str]:
    """Product paths reached from the home page via category links and "next" links."""
    home = parsel.Selector(session.get(base + "/", timeout=TIMEOUT).text)
    found: set[str] = set()
    for cat in home.css(CSS_SELECTORS["category_links"]).getall():
        url: str | None = urljoin(base + "/", cat)
        seen_pages = 0
        while url:
            r = session.get(url, timeout=TIMEOUT)
            assert r.status_code == 200, url
            sel = parsel.Selector(r.text)
            found |= {urlsplit(urljoin(url, h)).path for h in sel.css(CSS_SELECTORS["product_links"]).getall()}
            nxt = sel.css(CSS_SELECTORS["next_page"]).get()
            url = urljoin(url, nxt) if nxt else None
            seen_pages += 1
            assert seen_pages < 1000
    return found


def check_markup(server: MallServer, products: dict[str, dict]) -> None:
    """Every mall's product pages expose the world's listed values in its markup."""
    sel_cfg = css_config()["selectors"]
    with requests.Session() as s:
        for mall in server:
            base = server.url(mall.name)
            for pid in mall.active_ids():
                prod = products[pid]
                url = base + mall.listings[pid].path
                r = s.get(url, timeout=TIMEOUT)
                assert r.status_code == 200, url
                imgs = [base + f"/img/{Path(i['file']).parent.name}-{Path(i['file']).name}" for i in prod["images"]]
                if mall.markup == "jsonld":
                    data = extruct.extract(r.text, base_url=url, syntaxes=["json-ld"])["json-ld"]
                    item = next(d for d in data if d.get("@type") == "Product")
                    assert item["name"] == expected_title(mall, prod)
                    assert item["sku"] == pid
                    assert item["brand"]["name"] == prod["brand"]
                    assert item["category"] == listed_category(prod)
                    assert item["image"] == imgs
                    assert item["description"] == prod["description"]
                    assert float(item["offers"]["price"]) == pytest.approx(prod["price"])
                    assert item["offers"]["priceCurrency"] == prod["currency"]
                    assert item["offers"]["url"] == url
                    assert {p["name"]: p["value"] for p in item["additionalProperty"]} == listed_attrs(prod)
                elif mall.markup == "microdata":
                    data = extruct.extract(r.text, base_url=url, syntaxes=["microdata", "opengraph"], uniform=True)
                    item = next(d for d in data["microdata"] if d["@type"] == "Product")
                    assert item["name"] == expected_title(mall, prod)
                    assert item["sku"] == pid
                    assert item["brand"]["name"] == prod["brand"]
                    assert item["category"] == listed_category(prod)
                    images = item["image"] if isinstance(item["image"], list) else [item["image"]]
                    assert images == imgs
                    assert float(item["offers"]["price"]) == pytest.approx(prod["price"])
                    assert item["offers"]["priceCurrency"] == prod["currency"]
                    props = item["additionalProperty"]
                    props = props if isinstance(props, list) else [props]
                    assert {p["name"]: p["value"] for p in props} == listed_attrs(prod)
                    og = extruct.extract(r.text, base_url=url, syntaxes=["opengraph"])["opengraph"][0]
                    pairs = og["properties"]
                    ogd = dict(pairs)
                    assert ogd["og:type"] == "product"
                    assert ogd["og:title"] == expected_title(mall, prod)
                    assert ogd["og:url"] == url
                    assert [v for k, v in pairs if k == "og:image"] == imgs
                    assert float(ogd["product:price:amount"]) == pytest.approx(prod["price"])
                    assert ogd["product:price:currency"] == prod["currency"]
                    assert ogd["product:category"] == listed_category(prod)
                else:
                    sel = parsel.Selector(r.text)
                    assert sel.css(sel_cfg["title"]).get() == expected_title(mall, prod)
                    price_text = sel.css(sel_cfg["price"]).get()
                    num = re.search(sel_cfg["price_regex"], price_text).group(1).replace(",", ".")
                    assert float(num) == pytest.approx(prod["price"])
                    assert sel.css(sel_cfg["currency"]).get() == prod["currency"]
                    assert sel.css(sel_cfg["category"]).get() == listed_category(prod)
                    assert sel.css(sel_cfg["brand"]).get() == prod["brand"]
                    assert sel.css(sel_cfg["sku"]).get() == pid
                    assert [urljoin(url, u) for u in sel.css(sel_cfg["images"]).getall()] == imgs
                    names = sel.css(sel_cfg["attr_names"]).getall()
                    values = sel.css(sel_cfg["attr_values"]).getall()
                    assert dict(zip(names, values, strict=True)) == listed_attrs(prod)


# ---------------------------------------------------------------------------- catalogue
def test_split_covers_world_and_records_duplicates(fake_world: Path) -> None:
    malls = build_demo_malls(fake_world, seed=0)
    assert [m.name for m in malls] == list(DEMO_MALLS)
    pids = set(world_products(fake_world))
    listed = set().union(*(m.listings for m in malls))
    assert listed == pids
    dups = duplicate_products(malls)
    assert dups and all(len(v) == 2 for v in dups.values())
    for m in malls:
        assert set(m.shared_with) == {p for p in dups if p in m.listings}
    # deterministic
    again = build_demo_malls(fake_world, seed=0)
    assert [sorted(m.listings) for m in again] == [sorted(m.listings) for m in malls]
    other = build_demo_malls(fake_world, seed=1)
    assert [sorted(m.listings) for m in other] != [sorted(m.listings) for m in malls]


def test_duplicates_serve_identical_image_bytes(clean: MallServer) -> None:
    dups = duplicate_products(list(clean))
    pid, (a, b) = next(iter(dups.items()))
    ja = clean[a].listings[pid]
    jb = clean[b].listings[pid]
    assert ja.primary != jb.primary
    for ia, ib in zip(ja.images, jb.images, strict=True):
        ra = requests.get(clean.url(a, ia.url_path), timeout=TIMEOUT)
        rb = requests.get(clean.url(b, ib.url_path), timeout=TIMEOUT)
        assert ra.status_code == rb.status_code == 200
        assert ra.content == rb.content


def test_markup_matches_world(clean: MallServer, fake_world: Path) -> None:
    check_markup(clean, world_products(fake_world))


def test_config_selectors_match_markup_module() -> None:
    cfg = yaml.safe_load((PROJECT_ROOT / "config" / "malls.yaml").read_text())
    names = [m["name"] for m in cfg["malls"]]
    assert names == [*DEMO_MALLS, "photos"]
    ports = [urlsplit(m["start_urls"][0]).port for m in cfg["malls"]]
    assert ports == [8001, 8002, 8003, 8004]
    assert css_config()["selectors"] == CSS_SELECTORS
    assert {m["extractor"] for m in cfg["malls"]} <= {"jsonld", "microdata", "opengraph", "css"}


def test_pagination_reaches_every_product(clean: MallServer) -> None:
    with requests.Session() as s:
        for mall in clean:
            found = walk_listings(clean.url(mall.name), s)
            assert found == {mall.listings[p].path for p in mall.active_ids()}


def test_pagination_on_many_products(tmp_path: Path) -> None:
    world = make_fake_world(tmp_path, n=150, seed=1, broken=False)
    with running_malls(build_demo_malls(world)) as server, requests.Session() as s:
        mall = server["demo-css"]
        assert max(mall.category_pages(c) for c in mall.categories.values()) >= 2
        assert walk_listings(server.url(mall.name), s) == {mall.listings[p].path for p in mall.active_ids()}
        assert s.get(server.url(mall.name, "/c/dress?page=99"), timeout=TIMEOUT).status_code == 404


def test_pages_link_to_disallowed_paths(clean: MallServer) -> None:
    mall = clean["demo-jsonld"]
    html = requests.get(clean.url(mall.name, mall.listings[mall.active_ids()[0]].path), timeout=TIMEOUT).text
    hrefs = parsel.Selector(html).css("a::attr(href)").getall()
    assert any(h.startswith("/cart") for h in hrefs)
    assert any(h.startswith("/account/") for h in hrefs)
    assert any(h.startswith("/search?q=") for h in hrefs)
    assert requests.get(clean.url(mall.name, "/cart"), timeout=TIMEOUT).status_code == 200


# ---------------------------------------------------------------------------- robots & sitemaps
def test_robots_txt(clean: MallServer) -> None:
    base = clean.url("demo-jsonld")
    r = requests.get(base + "/robots.txt", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    lines = r.text.splitlines()
    assert lines[0] == "User-agent: *"
    for p in ("/cart", "/account", "/search"):
        assert f"Disallow: {p}" in lines
    assert "Crawl-delay: 1" in lines
    assert f"Sitemap: {base}/sitemap.xml" in lines


@pytest.mark.parametrize("mode", [404, 500, 503])
def test_robots_status_modes(fresh: MallServer, mode: int) -> None:
    fresh["demo-css"].robots_status = mode
    assert requests.get(fresh.url("demo-css", "/robots.txt"), timeout=TIMEOUT).status_code == mode
    # the rest of the site is unaffected
    assert requests.get(fresh.url("demo-css", "/"), timeout=TIMEOUT).status_code == 200


def test_robots_unreachable_drops_connection(fresh: MallServer) -> None:
    fresh["demo-css"].robots_status = "unreachable"
    with pytest.raises(requests.ConnectionError):
        requests.get(fresh.url("demo-css", "/robots.txt"), timeout=TIMEOUT)
    assert fresh.log("demo-css").count(path="/robots.txt", status=0) == 1


def test_robots_redirects_and_crawl_delay(fake_world: Path) -> None:
    malls = build_demo_malls(fake_world, crawl_delay=3)
    malls[0].robots_redirects = 3
    with running_malls(malls) as server:
        r = requests.get(server.url(malls[0].name, "/robots.txt"), timeout=TIMEOUT)
        assert r.status_code == 200 and len(r.history) == 3
        assert "Crawl-delay: 3" in r.text
        assert "Disallow: /cart" in r.text


def test_sitemap_index_lists_every_product(clean: MallServer) -> None:
    ns = {"sm": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    with requests.Session() as s:
        for mall in clean:
            base = clean.url(mall.name)
            index = parsel.Selector(s.get(base + "/sitemap.xml", timeout=TIMEOUT).text, type="xml")
            index.register_namespace("sm", ns["sm"])
            assert index.xpath("/sm:sitemapindex").get()
            locs = index.xpath("//sm:sitemap/sm:loc/text()").getall()
            assert locs == [base + "/sitemap-products.xml", base + "/sitemap-categories.xml"]
            urls: dict[str, str] = {}
            for loc in locs:
                sm = parsel.Selector(s.get(loc, timeout=TIMEOUT).text, type="xml")
                sm.register_namespace("sm", ns["sm"])
                for u in sm.xpath("//sm:url"):
                    urls[u.xpath("sm:loc/text()").get()] = u.xpath("sm:lastmod/text()").get()
            products = {base + mall.listings[p].path for p in mall.active_ids()}
            cats = {base + f"/c/{c}" for c in mall.categories}
            assert set(urls) == products | cats
            assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", v) for v in urls.values())


# ---------------------------------------------------------------------------- caching & revisions
def test_conditional_requests(clean: MallServer) -> None:
    mall = clean["demo-microdata"]
    pid = mall.active_ids()[0]
    with requests.Session() as s:
        for path in ("/", mall.listings[pid].path, mall.listings[pid].images[0].url_path, "/sitemap.xml"):
            url = clean.url(mall.name, path)
            r = s.get(url, timeout=TIMEOUT)
            assert r.status_code == 200
            etag, lm = r.headers["ETag"], r.headers["Last-Modified"]
            assert etag.startswith('"') and not etag.startswith("W/")
            assert s.get(url, headers={"If-None-Match": etag}, timeout=TIMEOUT).status_code == 304
            assert s.get(url, headers={"If-Modified-Since": lm}, timeout=TIMEOUT).status_code == 304
            assert s.get(url, headers={"If-None-Match": '"other"'}, timeout=TIMEOUT).status_code == 200
            old = "Mon, 01 Jan 2001 00:00:00 GMT"
            assert s.get(url, headers={"If-Modified-Since": old}, timeout=TIMEOUT).status_code == 200


def test_image_headers(clean: MallServer, fake_world: Path) -> None:
    mall = clean["demo-jsonld"]
    img = mall.listings[mall.active_ids()[3]].images[0]
    r = requests.get(clean.url(mall.name, img.url_path), timeout=TIMEOUT)
    assert r.headers["Content-Type"] == "image/jpeg"
    assert int(r.headers["Content-Length"]) == len(r.content) == img.path.stat().st_size
    assert r.content == img.path.read_bytes()
    Image.open(io.BytesIO(r.content)).load()


def test_world_broken_files_served_as_is(clean: MallServer, fake_world: Path) -> None:
    broken = json.loads((fake_world / "broken.json").read_text())
    for b in broken:
        name = f"{Path(b['file']).parent.name}-{Path(b['file']).name}"
        mall = next(m for m in clean if name in m.images)
        r = requests.get(clean.url(mall.name, f"/img/{name}"), timeout=TIMEOUT)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert r.content == (fake_world / b["file"]).read_bytes()


def test_revisions_change_and_remove_products(fresh: MallServer) -> None:
    mall = fresh["demo-jsonld"]
    base = fresh.url(mall.name)
    with requests.Session() as s:
        before = {p: s.get(base + mall.listings[p].path, timeout=TIMEOUT) for p in mall.active_ids()}
        fresh.set_revision(mall.name, 1)
        changed, removed = mall.changed_at(1), mall.removed_at(1)
        assert changed and removed and not changed & removed
        assert mall.diff(1) == {"changed": changed, "removed": removed}
        for pid, old in before.items():
            r = s.get(base + mall.listings[pid].path, timeout=TIMEOUT)
            if pid in removed:
                assert r.status_code in (404, 410) and r.status_code == mall.gone_status(pid)
                continue
            assert r.status_code == 200
            if pid in changed:
                assert r.headers["ETag"] != old.headers["ETag"]
                assert r.headers["Last-Modified"] != old.headers["Last-Modified"]
                item = extruct.extract(r.text, syntaxes=["json-ld"])["json-ld"][0]
                assert item["name"] != mall.listings[pid].title
                assert item["offers"]["price"] < mall.listings[pid].price
                # the old validator no longer matches
                cond = s.get(
                    base + mall.listings[pid].path, headers={"If-None-Match": old.headers["ETag"]}, timeout=TIMEOUT
                )
                assert cond.status_code == 200
            else:
                assert r.headers["ETag"] == old.headers["ETag"]
        assert walk_listings(base, s) == {mall.listings[p].path for p in mall.active_ids()}
        sm = s.get(base + "/sitemap-products.xml", timeout=TIMEOUT).text
        assert all(mall.listings[p].path not in sm for p in removed)
        pid = next(iter(changed))
        assert f"{base}{mall.listings[pid].path}</loc><lastmod>2024-01-02" in sm
        # revision 2 is cumulative; back to 0 restores everything
        mall.set_revision(2)
        assert removed <= set(mall.listings) - set(mall.active_ids())
        assert mall.diff(2, since=1)["removed"] == mall.removed_at(2)
        mall.set_revision(0)
        assert s.get(base + mall.listings[next(iter(removed))].path, timeout=TIMEOUT).status_code == 200


# ---------------------------------------------------------------------------- faults
def test_fault_config_defaults_and_selection(fake_world: Path) -> None:
    assert not FaultConfig().enabled and FaultConfig.all_on().enabled
    a = build_demo_malls(fake_world, faults=True)
    b = build_demo_malls(fake_world, faults=True)
    assert [m.expected_faults() for m in a] == [m.expected_faults() for m in b]
    for m in a:
        desc = m.expected_faults()
        assert all(desc["products"][k] for k in desc["products"])
        assert all(desc["images"][k] for k in desc["images"])
        assert max(desc["redirect_hops"].values()) > 5
    clean = build_demo_malls(fake_world)
    assert all(not any(m.expected_faults()["products"].values()) for m in clean)
    only = build_demo_malls(fake_world, faults={"demo-css": {"not_found_rate": 0.1}})
    assert only[2].expected_faults()["products"]["not_found"]
    assert not only[0].expected_faults()["products"]["not_found"]


def test_fault_not_found(faulty: MallServer) -> None:
    for mall in faulty:
        for pid in mall.faults.products["not_found"]:
            path = mall.listings[pid].path
            assert requests.get(faulty.url(mall.name, path), timeout=TIMEOUT).status_code == 404
            assert path in requests.get(faulty.url(mall.name, "/sitemap-products.xml"), timeout=TIMEOUT).text


def test_fault_error_burst_then_success(faulty: MallServer) -> None:
    for mall in faulty:
        n = mall.fault_config.burst_len
        for pid in mall.faults.products["error_burst"]:
            url = faulty.url(mall.name, mall.listings[pid].path)
            codes = [requests.get(url, timeout=TIMEOUT).status_code for _ in range(n + 2)]
            assert codes == [mall.faults.burst_status[pid]] * n + [200, 200]
    # counters belong to the server instance: a new server starts the burst again
    mall = faulty["demo-jsonld"]
    pid = next(iter(mall.faults.products["error_burst"]))
    with running_malls([mall]) as other:
        assert requests.get(other.url(mall.name, mall.listings[pid].path), timeout=TIMEOUT).status_code >= 500


def test_fault_rate_limit(faulty: MallServer) -> None:
    for mall in faulty:
        for pid in mall.faults.products["rate_limit"]:
            url = faulty.url(mall.name, mall.listings[pid].path)
            r = requests.get(url, timeout=TIMEOUT)
            assert r.status_code == 429
            assert r.headers["Retry-After"] == str(mall.fault_config.retry_after_s)
            assert requests.get(url, timeout=TIMEOUT).status_code == 200


def test_fault_slow(faulty: MallServer) -> None:
    mall = faulty["demo-css"]
    pid = next(iter(mall.faults.products["slow"]))
    t0 = time.perf_counter()
    r = requests.get(faulty.url(mall.name, mall.listings[pid].path), timeout=TIMEOUT)
    assert r.status_code == 200
    assert time.perf_counter() - t0 >= mall.fault_config.slow_s


def test_fault_redirect_chains(faulty: MallServer) -> None:
    for mall in faulty:
        base = faulty.url(mall.name)
        with requests.Session() as s:
            linked = set()
            for c in mall.categories:
                for page in range(1, mall.category_pages(mall.categories[c]) + 1):
                    sel = parsel.Selector(s.get(f"{base}/c/{c}?page={page}", timeout=TIMEOUT).text)
                    linked |= set(sel.css(CSS_SELECTORS["product_links"]).getall())
            for pid, hops in mall.faults.redirect_hops.items():
                start = f"/r/{pid}/1"
                assert start in linked
                if hops > 5:
                    s.max_redirects = 5
                    with pytest.raises(requests.TooManyRedirects):
                        s.get(base + start, timeout=TIMEOUT)
                    s.max_redirects = 30
                r = s.get(base + start, timeout=TIMEOUT)
                assert r.status_code == 200 and r.url == base + mall.listings[pid].path
                assert len(r.history) == hops
                assert {h.status_code for h in r.history} <= {301, 302}


def test_fault_wrong_content_type(faulty: MallServer) -> None:
    for mall in faulty:
        for name in mall.faults.images["wrong_content_type"]:
            r = requests.get(faulty.url(mall.name, f"/img/{name}"), timeout=TIMEOUT)
            assert r.status_code == 200
            if mall.faults.wrong_type_variant[name] == "header":
                assert r.headers["Content-Type"].startswith("text/html")
                assert r.content == mall.images[name].path.read_bytes()
            else:
                assert r.headers["Content-Type"] == "image/jpeg"
                assert r.content.startswith(b"<!DOCTYPE html>")


def test_fault_truncated_image(faulty: MallServer) -> None:
    for mall in faulty:
        for name in mall.faults.images["truncated_image"]:
            full = mall.images[name].path.read_bytes()
            r = requests.get(faulty.url(mall.name, f"/img/{name}"), timeout=TIMEOUT)
            assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
            assert int(r.headers["Content-Length"]) == len(r.content) < len(full)
            assert full.startswith(r.content)
            with pytest.raises(OSError):
                Image.open(io.BytesIO(r.content)).load()


def test_request_log(fresh: MallServer) -> None:
    name = "demo-microdata"
    log = fresh.log(name)
    log.clear()
    with requests.Session() as s:
        for _ in range(5):
            s.get(fresh.url(name, "/"), headers={"User-Agent": "TestBot"}, timeout=TIMEOUT)
        s.get(fresh.url(name, "/nope"), timeout=TIMEOUT)
    assert log.count(path="/", status=200) == 5
    assert log.by_path_status()[("/nope", 404)] == 1
    assert log.by_status()[200] == 5
    assert len(log.timestamps("/")) == 6 and log.request_rate("/") > 0
    assert log.entries[0].user_agent == "TestBot"


def test_server_ports_and_stop(fake_world: Path) -> None:
    malls = build_demo_malls(fake_world)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # consecutive ports from base_port (skip if the neighbours happen to be taken)
    try:
        server = MallServer(malls, base_port=port).start()
    except OSError:
        pytest.skip("consecutive ports busy")
    try:
        assert [server.port(m.name) for m in malls] == [port, port + 1, port + 2]
        assert requests.get(server.url("demo-css", "/"), timeout=TIMEOUT).status_code == 200
    finally:
        server.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


# ---------------------------------------------------------------------------- real small world
def test_small_world_demo_malls(demo_malls: MallServer, small_world: Path) -> None:
    products = world_products(small_world)
    assert set().union(*(m.listings for m in demo_malls)) == set(products)
    check_markup(demo_malls, products)
    with requests.Session() as s:
        for mall in demo_malls:
            assert walk_listings(demo_malls.url(mall.name), s) == {mall.listings[p].path for p in mall.active_ids()}


def test_small_world_faulty_malls(faulty_malls: MallServer) -> None:
    for mall in faulty_malls:
        desc = mall.expected_faults()
        for pid in desc["products"]["not_found"]:
            url = faulty_malls.url(mall.name, mall.listings[pid].path)
            assert requests.get(url, timeout=TIMEOUT).status_code == 404
        for name in desc["images"]["truncated_image"]:
            r = requests.get(faulty_malls.url(mall.name, f"/img/{name}"), timeout=TIMEOUT)
            assert len(r.content) < mall.images[name].path.stat().st_size or mall.images[name].path.stat().st_size <= 1


# ---------------------------------------------------------------------------- photo mall
def test_photo_mall_from_fabricated_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    rows = [("a1", "Dress"), ("b2", "Not sure"), ("c3", "Skip"), ("d4", "Other"), ("e5", "missing")]
    for image, _ in rows[:4]:
        Image.new("RGB", (10, 10), "blue").save(tmp_path / "images" / f"{image}.jpg", "JPEG")
    (tmp_path / "labels.csv").write_text(
        "image,sender_id,label,kids\n" + "".join(f"{i},1,{lab},False\n" for i, lab in rows)
    )
    mall = build_photo_mall(tmp_path)
    assert sorted(mall.listings) == ["a1", "b2", "c3", "d4"]
    assert set(mall.categories.values()) == {"Dress", "Not sure", "Skip", "Other"}
    assert build_photo_mall(tmp_path, limit=2).listings.keys() == {"a1", "b2"}
    with running_malls([mall]) as server:
        r = requests.get(server.url("photos", mall.listings["b2"].path), timeout=TIMEOUT)
        item = extruct.extract(r.text, syntaxes=["json-ld"])["json-ld"][0]
        assert item["category"] == "Not sure"
        img = requests.get(item["image"][0], timeout=TIMEOUT)
        assert img.content == (tmp_path / "images" / "b2.jpg").read_bytes()


def test_held_out_photos_are_never_served(tmp_path: Path) -> None:
    """The demo's photo mall keeps a seeded share of the photos out of its shop: exactly the
    ones ``held_out_photos`` names, for checking the endpoint on photos in no catalog."""
    from pipelines.malls.photos import held_out_photos

    (tmp_path / "images").mkdir()
    ids = [f"p{i:03d}" for i in range(200)]
    for i in ids:
        Image.new("RGB", (10, 10), "red").save(tmp_path / "images" / f"{i}.jpg", "JPEG")
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f"{i},T-Shirt\n" for i in ids))
    held = {f.stem for f, _ in held_out_photos(tmp_path, share=0.1)}
    served = set(build_photo_mall(tmp_path, holdout=0.1).listings)
    assert 5 <= len(held) <= 40 and held.isdisjoint(served) and held | served == set(ids)
    assert set(build_photo_mall(tmp_path).listings) == set(ids)  # no holdout unless asked
    assert held != {f.stem for f, _ in held_out_photos(tmp_path, seed=1, share=0.1)}


@pytest.mark.shared_data
def test_photo_mall_serves_real_photos(photo_mall: MallServer) -> None:
    root = SHARED_PHOTOS
    mall = photo_mall["photos"]
    assert len(mall.listings) > 4000
    assert {"Not sure", "Skip", "Other"} <= set(mall.categories.values())
    base = photo_mall.url("photos")
    with requests.Session() as s:
        home = parsel.Selector(s.get(base + "/", timeout=TIMEOUT).text)
        assert "/c/not-sure" in home.css(CSS_SELECTORS["category_links"]).getall()
        listing = parsel.Selector(s.get(base + "/c/not-sure", timeout=TIMEOUT).text)
        link = listing.css(CSS_SELECTORS["product_links"]).get()
        r = s.get(base + link, timeout=TIMEOUT)
        item = extruct.extract(r.text, syntaxes=["json-ld"])["json-ld"][0]
        assert item["category"] == "Not sure"
        img = s.get(item["image"][0], timeout=TIMEOUT)
        assert img.headers["Content-Type"] == "image/jpeg"
        assert img.content == (root / "images" / f"{item['sku']}.jpg").read_bytes()
        Image.open(io.BytesIO(img.content)).load()
