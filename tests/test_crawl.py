"""Crawl stage: config, extraction of all demo markups, guarded images, failures, dedup,
faults with retries, and RFC 9309 robots.txt handling — against real malls on loopback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

from pipelines.crawl.config import ConfigError, Politeness, demo_config, load_config, parse_config
from pipelines.crawl.extract import extract_product, parse_price
from pipelines.crawl.images import ImageRejected, check_headers, decode
from pipelines.crawl.pipeline import crawl
from pipelines.malls import (
    FaultConfig,
    Mall,
    MallServer,
    build_demo_malls,
    duplicate_products,
    load_world,
)
from pipelines.services import free_port
from pipelines.settings import PROJECT_ROOT, Settings
from tests.helpers.malls import make_fake_world, running_malls


# ---------------------------------------------------------------------------- helpers
def run_crawl(
    server: MallServer,
    tmp: Path,
    names: list[str] | None = None,
    politeness: Politeness | None = None,
    out: str = "snap",
    **kw,
) -> dict:
    """Crawl ``server``'s malls into ``tmp/out`` with an isolated state dir (no DVC)."""
    cfg = demo_config({n: server.url(n) for n in (names or list(server.malls))}, politeness or Politeness.off())
    s = Settings(root=tmp / "proj")
    return crawl(cfg, out=tmp / out, s=s, state=kw.pop("state", tmp / "state"), **kw)


def load(info: dict) -> dict[str, pd.DataFrame]:
    root = Path(info["path"])
    return {n: pd.read_parquet(root / f"{n}.parquet") for n in ("products", "images", "failures")}


def listings_of(products: pd.DataFrame) -> dict[str, dict]:
    """Every mall listing (product_id -> listing dict + the row it lives in)."""
    out = {}
    for _, row in products.iterrows():
        for lst in json.loads(row["listings"]):
            out[lst["product_id"]] = {**lst, "row": row}
    return out


def listed_attrs(prod: dict) -> dict[str, str]:
    attrs = (prod.get("listed") or {}).get("attributes", prod["attributes"]) or {}
    return {k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in attrs.items() if v is not None}


@pytest.fixture(scope="module")
def clean_crawl(demo_malls: MallServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    demo_malls.reset()
    info = run_crawl(demo_malls, tmp_path_factory.mktemp("clean"))
    return {"info": info, **load(info), "logs": {n: demo_malls.log(n).entries for n in demo_malls.malls}}


# ---------------------------------------------------------------------------- config
def test_shipped_config_loads() -> None:
    cfg = load_config(PROJECT_ROOT / "config" / "malls.yaml")
    assert [m.extractor for m in cfg.malls][:3] == ["jsonld", "microdata", "css"]
    assert cfg.select(["demo-css"]).malls[0].selectors["title"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("malls: [", "not valid YAML"),
        ("- a\n- b\n", "'malls:' list"),
        (
            "malls:\n  - name: x\n    extractor: xpath\n    start_urls: ['http://h/']\n"
            "    politeness: {user_agent: 'Bot (+https://e.org)'}\n",
            "mall 'x': extractor",
        ),
        (
            "malls:\n  - name: x\n    extractor: jsonld\n    start_urls: ['ftp://h/']\n"
            "    politeness: {user_agent: 'Bot (+https://e.org)'}\n",
            "not an absolute http",
        ),
        (
            "malls:\n  - name: x\n    extractor: jsonld\n    start_urls: ['http://h/']\n"
            "    politeness: {user_agent: 'Bot'}\n",
            "contact",
        ),
        (
            "malls:\n  - name: x\n    extractor: css\n    start_urls: ['http://h/']\n"
            "    politeness: {user_agent: 'Bot (+https://e.org)'}\n",
            "needs selectors",
        ),
        (
            "malls:\n  - name: x\n    extractor: jsonld\n    politeness: {user_agent: 'a@b.org', delay: 1}\n",
            "politeness.delay: Extra inputs",
        ),
    ],
)
def test_bad_config_gives_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "malls.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="(?s)" + needle.replace("(", r"\(").replace("+", r"\+")):
        load_config(f)


def test_config_select_unknown_mall() -> None:
    cfg = parse_config(
        {
            "malls": [
                {
                    "name": "a",
                    "extractor": "jsonld",
                    "start_urls": ["http://h/"],
                    "politeness": {"user_agent": "B (+https://e.org)"},
                }
            ]
        }
    )
    assert cfg.malls[0].allowed_domains == ["h"]
    with pytest.raises(ConfigError, match="unknown mall"):
        cfg.select(["nope"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Path("/nonexistent/malls.yaml"))


# ---------------------------------------------------------------------------- units
def test_parse_price_formats() -> None:
    assert parse_price("€49.90") == 49.9
    assert parse_price("49,90 €") == 49.9
    assert parse_price(12) == 12.0
    assert parse_price("free") is None


def test_extract_broken_jsonld_is_not_a_product() -> None:
    html = '<html><head><script type="application/ld+json">{"@type": "Thing"}</script></head></html>'
    assert extract_product(html, "http://h/p", "jsonld") is None


def test_image_guards(tmp_path: Path) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24), "red").save(buf, "JPEG")
    good = buf.getvalue()
    info = decode(good)
    assert (info.width, info.height, info.format) == (32, 24, "JPEG")
    assert info.sha256 == hashlib.sha256(good).hexdigest() and len(info.phash) == 16
    with pytest.raises(ImageRejected) as e:
        decode(good[: len(good) // 2])
    assert e.value.kind in ("truncated", "decode")
    with pytest.raises(ImageRejected, match="content_type"):
        check_headers("text/html", 10, 100)
    with pytest.raises(ImageRejected, match="too_large"):
        check_headers("image/jpeg", 1000, 100)
    with pytest.raises(ImageRejected) as e:
        decode(b"<html>not an image</html>")
    assert e.value.kind == "decode"
    # A decompression bomb: tiny file, huge canvas; refused before pixels are decoded.
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, "PNG")
    with pytest.raises(ImageRejected) as e:
        decode(bomb.getvalue())
    assert e.value.kind == "decompression_bomb"


# ---------------------------------------------------------------------------- clean crawl
def test_every_listed_product_found_with_fields(clean_crawl: dict, demo_malls: MallServer, small_world: Path) -> None:
    world = {p["product_id"]: p for p in load_world(small_world)[1]}
    listings = listings_of(clean_crawl["products"])
    for mall in demo_malls:
        for pid in mall.active_ids():
            lst = mall.listings[pid]
            got = listings.get(f"{mall.name}:{pid}")
            assert got is not None, f"{mall.name} lost {pid}"
            assert got["title"] == lst.title
            assert got["price"] == pytest.approx(lst.price)
            assert got["currency"] == lst.currency
            assert got["url"].endswith(lst.path)
            row = got["row"]
            if row["product_id"] == f"{mall.name}:{pid}":  # the canonical listing's own fields
                assert row["brand"] == world[pid]["brand"]
                assert row["category"] == lst.category
                assert json.loads(row["attributes"]) == listed_attrs(world[pid])
                assert row["sku"] == pid
                assert len(row["image_urls"]) == len(world[pid]["images"])
    n_listed = sum(len(m.listings) for m in demo_malls)
    assert len(listings) == n_listed
    assert not clean_crawl["products"]["removed"].any()


def test_duplicates_across_malls_are_one_product(clean_crawl: dict, demo_malls: MallServer) -> None:
    products = clean_crawl["products"]
    dups = duplicate_products(list(demo_malls))
    assert dups
    assert products["product_id"].is_unique
    for pid, malls in dups.items():
        rows = products[products["sku"] == pid]
        assert len(rows) == 1, f"{pid} listed by {malls} is {len(rows)} rows"
        row = rows.iloc[0]
        assert {row["mall"], *row["also_in"]} == set(malls)
        assert row["n_listings"] == 2
    # Distinct world products are never merged.
    assert len(products) == len({p for m in demo_malls for p in m.listings})


def test_images_content_addressed_and_described(clean_crawl: dict) -> None:
    root = Path(clean_crawl["info"]["path"])
    images = clean_crawl["images"]
    assert len(images) > 0
    for sha, g in images.groupby("sha256"):
        row = g.iloc[0]
        f = root / "images" / sha[:2] / f"{sha}.{row['ext']}"
        assert f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == sha
        assert row["width"] > 0 and row["height"] > 0 and row["format"] in ("JPEG", "PNG")
    stored = {p.stem for p in (root / "images").rglob("*.*")}
    assert stored == set(images["sha256"])  # exact dedup: one file per distinct sha
    assert set(images["role"]) <= {"shop", "model", "street", "gallery"}
    assert {"shop", "model"} <= set(images["role"])


def test_broken_world_images_become_failures(clean_crawl: dict, small_world: Path) -> None:
    broken = json.loads((small_world / "broken.json").read_text())
    fails = clean_crawl["failures"]
    image_fail = fails[fails["kind"] != "robots"]
    for b in broken:
        name = f"{Path(b['file']).parent.name}-{Path(b['file']).name}"
        if b["kind"] == "wrong_extension":
            continue  # a valid PNG behind .jpg: accepted (format=PNG), validation judges it
        hits = image_fail[image_fail["url"].str.endswith("/img/" + name)]
        assert len(hits) >= 1, f"{b} not in failures"
        assert set(hits["kind"]) <= {"truncated", "empty", "decode"}


def test_nothing_dropped_silently(clean_crawl: dict) -> None:
    """Every image URL of every product is either stored or a failure row."""
    images, fails = clean_crawl["images"], clean_crawl["failures"]
    stored = set(zip(images["product_id"], images["source_url"], strict=True))
    failed = set(fails["url"])
    for _, row in clean_crawl["products"].iterrows():
        for url in row["image_urls"]:
            assert (row["product_id"], url) in stored or url in failed, url


def test_robots_disallowed_paths_never_requested(clean_crawl: dict) -> None:
    for name, entries in clean_crawl["logs"].items():
        paths = [urlsplit(e.path).path for e in entries]
        assert paths.count("/robots.txt") == 1, name
        bad = [p for p in paths if p.startswith(("/cart", "/account", "/search"))]
        assert bad == [], f"{name} requested disallowed {bad[:5]}"
        assert all(e.user_agent.startswith("TailorBot/") for e in entries)
    robots = clean_crawl["failures"].query("kind == 'robots'")
    assert len(robots) > 0 and robots["url"].str.contains("/cart|/account|/search").all()


def test_stats_and_snapshot_files(clean_crawl: dict) -> None:
    root = Path(clean_crawl["info"]["path"])
    stats = json.loads((root / "stats.json").read_text())
    for k in ("pages", "images", "bytes", "errors_by_kind", "duration_s", "products", "failures"):
        assert k in stats
    assert stats["pages"] > 0 and stats["images"] == clean_crawl["images"]["sha256"].nunique()
    meta = json.loads((root / "snapshot.json").read_text())
    assert meta["counts"]["products"] == len(clean_crawl["products"])
    assert clean_crawl["info"]["snapshot_id"] is None  # outside the data tree: no DVC
    cols = set(clean_crawl["products"].columns)
    assert {
        "product_id",
        "mall",
        "url",
        "title",
        "brand",
        "price",
        "currency",
        "category",
        "attributes",
        "image_sha256",
        "fetched_at",
        "removed",
        "listings",
        "also_in",
    } <= cols
    assert set(clean_crawl["failures"].columns) >= {"url", "mall", "kind", "reason", "status", "time"}


def test_snapshot_is_immutable(clean_crawl: dict, demo_malls: MallServer, tmp_path: Path) -> None:
    root = Path(clean_crawl["info"]["path"])
    before = (root / "products.parquet").read_bytes()
    # A second publish to the same directory returns the existing snapshot untouched.
    from pipelines.crawl.snapshot import write_snapshot

    meta = write_snapshot([], root, tmp_path)
    assert meta["content_sha256"] == json.loads((root / "snapshot.json").read_text())["content_sha256"]
    assert (root / "products.parquet").read_bytes() == before


# ---------------------------------------------------------------------------- faults
def test_faulty_malls(faulty_malls: MallServer, tmp_path: Path) -> None:
    faulty_malls.reset()
    info = run_crawl(faulty_malls, tmp_path, politeness=Politeness.off(retry_times=3))
    d = load(info)
    fails, listings = d["failures"], listings_of(d["products"])
    for mall in faulty_malls:
        exp = mall.expected_faults()
        log = faulty_malls.log(mall.name)
        base = faulty_malls.url(mall.name)
        mf = fails[fails["mall"] == mall.name]
        for pid in exp["products"]["not_found"]:
            hit = mf[(mf["url"] == base + mall.listings[pid].path) & (mf["kind"] == "http")]
            assert len(hit) == 1 and hit.iloc[0]["status"] == 404, pid
            assert f"{mall.name}:{pid}" not in listings
        for kind in ("error_burst", "rate_limit", "slow"):
            for pid in exp["products"][kind]:
                assert f"{mall.name}:{pid}" in listings, f"{kind} {pid} not recovered"
        for pid in exp["products"]["rate_limit"]:
            path = mall.listings[pid].path
            assert log.count(path=path, status=429) == 1 and log.count(path=path, status=200) >= 1
            t429 = next(e.t for e in log.entries if e.path == path and e.status == 429)
            t200 = next(e.t for e in log.entries if e.path == path and e.status == 200)
            assert t200 - t429 >= exp["config"]["retry_after_s"] * 0.9  # Retry-After honoured
        for pid in exp["products"]["error_burst"]:
            path = mall.listings[pid].path
            assert log.count(path=path, status=200) >= 1
        long = [p for p, h in exp["redirect_hops"].items() if h > 5]
        for pid, hops in exp["redirect_hops"].items():
            if hops > 5:
                hit = mf[mf["kind"] == "redirect"]
                assert hit["url"].str.contains(f"/r/{pid}/").any(), f"long chain {pid} not a failure"
            assert f"{mall.name}:{pid}" in listings  # still found through the sitemap
        assert long
        for name in exp["images"]["wrong_content_type"]:
            url = base + mall.images[name].url_path
            hit = mf[mf["url"] == url]
            if any(url in lst["row"]["image_urls"] for lst in listings.values()):
                assert set(hit["kind"]) & {"content_type", "decode"}, name
        for name in exp["images"]["truncated_image"]:
            url = base + mall.images[name].url_path
            hit = mf[mf["url"] == url]
            if any(url in lst["row"]["image_urls"] for lst in listings.values()):
                assert set(hit["kind"]) & {"truncated", "decode"}, name
    # Nothing dropped: every listed product is a product or a failure row.
    for mall in faulty_malls:
        base = faulty_malls.url(mall.name)
        for pid in mall.active_ids():
            assert f"{mall.name}:{pid}" in listings or (fails["url"] == base + mall.listings[pid].path).any(), pid
    stats = info["stats"]
    assert stats["errors_by_kind"].get("http", 0) >= 3 and sum(m["retries"] for m in stats["malls"].values()) > 0


# ---------------------------------------------------------------------------- robots
@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_world(tmp_path_factory.mktemp("tiny"), n=9, seed=5, broken=False)


def _one_mall(world: Path, **kw) -> Mall:
    return build_demo_malls(world, seed=0, duplicate_share=0.0, **kw)[0]


@pytest.mark.parametrize(
    "mode, redirects, allowed",
    [
        (404, 0, True),
        (410, 0, True),
        (500, 0, False),
        (503, 0, False),
        ("unreachable", 0, False),
        (200, 3, True),
        (200, 6, False),
    ],
    ids=["404", "410", "500", "503", "unreachable", "3-redirects", "6-redirects"],
)
def test_robots_rfc9309(tiny_world: Path, tmp_path: Path, mode, redirects: int, allowed: bool) -> None:
    mall = _one_mall(tiny_world, robots_status=mode, robots_redirects=redirects)
    with running_malls([mall]) as server:
        info = run_crawl(server, tmp_path)
        paths = [urlsplit(e.path).path for e in server.log(mall.name).entries]
    d = load(info)
    if allowed:
        assert len(d["products"]) == len(mall.listings)
    else:
        assert len(d["products"]) == 0
        assert all(p == "/robots.txt" or p.startswith("/robots-hop/") for p in paths), paths
        assert (d["failures"]["kind"] == "robots").all() and len(d["failures"]) >= 1
        assert d["failures"]["reason"].str.contains("disallow all").all()


def test_crawl_delay_honoured(tiny_world: Path, tmp_path: Path) -> None:
    mall = _one_mall(tiny_world, crawl_delay=0.25)
    with running_malls([mall]) as server:
        pol = Politeness.off(obey_crawl_delay=True, concurrency_per_domain=4)
        run_crawl(server, tmp_path, politeness=pol)
        ts = sorted(e.t for e in server.log(mall.name).entries if e.path != "/robots.txt")
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    assert len(gaps) > 5
    assert min(gaps) >= 0.2, f"requests {min(gaps):.3f}s apart despite Crawl-delay 0.25"


def test_robots_cached_for_24h(tiny_world: Path, tmp_path: Path) -> None:
    mall = _one_mall(tiny_world)
    with running_malls([mall]) as server:
        run_crawl(server, tmp_path, out="a")
        run_crawl(server, tmp_path, out="b")  # same state dir: robots.txt comes from cache
        assert server.log(mall.name).count(path="/robots.txt") == 1


def test_near_dup_groups_match_pairwise_hamming() -> None:
    """The numpy comparison groups exactly as every pair within the threshold would."""
    import random

    from pipelines._unionfind import UnionFind
    from pipelines.crawl.snapshot import _near_dup_groups

    rng = random.Random(3)
    base = [rng.getrandbits(64) for _ in range(120)]
    hashes = {}
    for i in range(480):  # copies of the 120 hashes with up to 2, 4 and 6 bits flipped
        h = base[i % 120]
        for _ in range(i // 120 * 2):
            h ^= 1 << rng.randrange(64)
        hashes[f"{i:04x}"] = f"{h:016x}"
    uf = UnionFind()
    items = sorted(hashes.items())
    for i, (a, ha) in enumerate(items):
        uf.find(a)
        for b, hb in items[i + 1 :]:
            if bin(int(ha, 16) ^ int(hb, 16)).count("1") <= 4:
                uf.union(a, b)
    assert _near_dup_groups(hashes, 4) == {k: uf.find(k) for k in hashes}
    assert len(set(_near_dup_groups(hashes, 4).values())) < len(hashes)


def test_outage_mid_crawl_marks_no_removals(tiny_world: Path, tmp_path: Path) -> None:
    """Issue 14, finding 4: product pages answering 5xx prove nothing about their products.

    Each such product is kept as it was (``not_visited``), not marked removed; a run whose
    error rate passes ``max_error_rate`` is incomplete as a whole, with the reason recorded."""
    good = _one_mall(tiny_world)
    port = free_port()  # the same mall, same URLs, before and during the outage
    with running_malls([good], base_port=port) as server:
        first = load(run_crawl(server, tmp_path, out="a"))
    assert len(first["products"]) == len(good.listings) and not first["products"]["removed"].any()
    down = build_demo_malls(
        tiny_world, seed=0, duplicate_share=0.0, faults=FaultConfig(error_burst_rate=1.0, burst_len=1000)
    )[0]
    with running_malls([down], base_port=port) as server:
        info = run_crawl(server, tmp_path, out="b", politeness=Politeness.off(retry_times=0))
        strict = run_crawl(server, tmp_path, out="c", politeness=Politeness.off(retry_times=0, max_error_rate=0.1))
    d = load(info)
    assert (d["failures"]["kind"] == "http").sum() == len(good.listings)
    assert len(d["products"]) == len(good.listings)
    assert not d["products"]["removed"].any()
    assert set(d["products"]["status"]) == {"not_visited"}

    def stats(i: dict) -> dict:
        return json.loads((Path(i["path"]) / "stats.json").read_text())["malls"][good.name]

    # a few failing pages among many answered ones: still a complete run
    assert stats(info)["incomplete_reason"] is None
    assert stats(strict)["incomplete_reason"].startswith("error rate ")
    assert not load(strict)["products"]["removed"].any()


def test_shipped_malls_follow_the_demo_mall_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`tailor mall serve` puts the demo malls on TAILOR_MALL_BASE_PORT: the shipped malls
    file, as the crawl DAG loads it, points at those ports; any other file is left as written."""
    from urllib.parse import urlsplit

    from pipelines.crawl.config import SHIPPED_MALLS
    from pipelines.settings import get_settings

    written = [urlsplit(m.start_urls[0]).port for m in load_config(SHIPPED_MALLS).malls]
    assert written == [8001, 8002, 8003, 8004]
    monkeypatch.setenv("TAILOR_MALL_BASE_PORT", "9101")
    get_settings.cache_clear()
    try:
        moved = load_config(SHIPPED_MALLS).malls
        assert [urlsplit(m.start_urls[0]).port for m in moved] == [9101, 9102, 9103, 9104]
        assert [urlsplit(m.sitemap).port for m in moved] == [9101, 9102, 9103, 9104]  # type: ignore[arg-type]
        other = tmp_path / "malls.yaml"
        other.write_text(SHIPPED_MALLS.read_text())
        assert [urlsplit(m.start_urls[0]).port for m in load_config(other).malls] == written
    finally:
        monkeypatch.delenv("TAILOR_MALL_BASE_PORT")
        get_settings.cache_clear()
