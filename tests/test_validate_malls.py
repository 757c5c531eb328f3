"""The ``malls`` suite: every mall the crawl was asked for must yield products, and at least
``min_ratio_to_last_good`` of its last good crawl's. A mall that is down (not served) or
yields far fewer products fails with the mall and the reason in the report and the Data
Docs; a healthy crawl passes; robots-disallowed links are not counted as errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.crawl.config import Politeness, demo_config
from pipelines.crawl.pipeline import crawl
from pipelines.malls import build_demo_malls
from pipelines.services import free_port
from pipelines.settings import Settings
from pipelines.validate.checkpoint import validate_snapshot
from tests.helpers.malls import make_fake_world, running_malls
from tests.helpers.snapshots import fabricate_snapshot


def _mall_results(rep: dict) -> dict[str, dict]:
    return {r["id"]: r for r in rep["results"] if r["suite"] == "malls"}


def _checks(rep: dict) -> dict[str, dict]:
    return {c["mall"]: c for c in rep["mall_checks"]}


@pytest.mark.timeout(180)
def test_mall_down_fails_with_reason_healthy_crawl_passes(tmp_path: Path) -> None:
    """Real crawls on loopback: two healthy malls, then the same crawl with one not served."""
    world = make_fake_world(tmp_path / "world", n=12, seed=5, broken=False)
    # Only product taxonomy categories, so nothing but the malls suite can fail here.
    jsonl = world / "products.jsonl"
    jsonl.write_text(jsonl.read_text().replace("trousers", "pants"))
    jsonld, microdata = build_demo_malls(world, seed=0, duplicate_share=0.0)[:2]
    s = Settings(root=tmp_path / "proj")
    state = tmp_path / "state"
    with running_malls([jsonld, microdata]) as server:
        urls = {m: server.url(m) for m in (jsonld.name, microdata.name)}
        good = crawl(demo_config(urls, Politeness.off()), out=tmp_path / "good", s=s, state=state)
        # The same malls again, one of them not served: nothing listens on its port.
        down_urls = {**urls, microdata.name: f"http://127.0.0.1:{free_port()}/"}
        down = crawl(demo_config(down_urls, Politeness.off()), out=tmp_path / "down", s=s, state=state)
    assert json.loads((Path(down["path"]) / "snapshot.json").read_text())["malls_requested"] == sorted(urls)

    rep = validate_snapshot(Path(good["path"]), s=s)
    assert rep["status"] in ("passed", "warning") and all(r["success"] for r in _mall_results(rep).values())
    assert all(c["ok"] and c["products"] > 0 for c in rep["mall_checks"])
    assert _checks(rep)[jsonld.name]["reason"].startswith("ok: ")
    # The demo malls link cart/account pages robots.txt disallows: policy, not errors.
    assert "robots-disallowed links skipped" in _checks(rep)[jsonld.name]["reason"]
    assert _checks(rep)[jsonld.name]["errors"] == 0

    rep2 = validate_snapshot(Path(down["path"]), s=s)
    assert rep2["status"] == "warning"  # visible, but not blocking the catalog
    res = _mall_results(rep2)
    assert not res["malls.products_present"]["success"]
    assert not res["malls.products_vs_last_good"]["success"]
    assert set(rep2["warnings_failed"]) >= {"malls.products_present", "malls.products_vs_last_good"}
    bad = _checks(rep2)[microdata.name]
    assert not bad["ok"] and bad["products"] == 0
    assert bad["last_good_products"] == _checks(rep)[microdata.name]["products"]
    assert bad["reason"].startswith("0 products")
    assert "robots.txt unreachable" in bad["reason"] and "0 pages fetched" in bad["reason"]
    assert microdata.name in res["malls.products_present"]["observed"]
    assert "robots.txt unreachable" in res["malls.products_present"]["observed"]
    assert _checks(rep2)[jsonld.name]["ok"]
    # The down mall's products are kept as they were (not proven gone), images included.
    prods = pd.read_parquet(Path(down["path"]) / "products.parquet")
    kept = prods[prods["mall"] == microdata.name]
    assert len(kept) == _checks(rep)[microdata.name]["products"]
    assert set(kept["status"]) == {"not_visited"} and not kept["removed"].any()
    imgs = pd.read_parquet(Path(down["path"]) / "images.parquet")
    assert set(kept["product_id"]) <= set(imgs["product_id"])
    q = pd.read_parquet(Path(rep2["run_dir"]) / "quarantine.parquet")
    assert not (q["reason"] == "no valid image").any()
    # The steward's summary page and GX's own validation page name the mall and the reason.
    page = Path(rep2["summary"]).read_text()
    assert "FAILED" in page and "robots.txt unreachable" in page and "malls.products_present" in page
    docs = Path(rep2["data_docs"]["malls"].removeprefix("file://")).read_text()
    assert "Failed" in docs and microdata.name in docs and "robots.txt unreachable" in docs


def test_far_fewer_products_than_last_good_crawl(tmp_path: Path) -> None:
    s = Settings(root=tmp_path / "proj")
    first = validate_snapshot(fabricate_snapshot(tmp_path / "big", n=40, seed=1), s=s, previous_rows=0)
    assert first["status"] in ("passed", "warning")
    assert all(r["success"] for r in _mall_results(first).values())
    assert _checks(first)["demo-jsonld"]["reason"] == "ok: 40 products, no earlier good crawl"

    # 12 vs 40 (< 0.5x); the whole-snapshot row_drop is switched off to isolate the mall check.
    rep = validate_snapshot(fabricate_snapshot(tmp_path / "small", n=12, seed=2), s=s, previous_rows=0)
    assert rep["status"] == "warning" and rep["critical_failed"] == []
    res = _mall_results(rep)
    assert res["malls.products_present"]["success"]
    assert not res["malls.products_vs_last_good"]["success"]
    reason = _checks(rep)["demo-jsonld"]["reason"]
    assert reason.startswith(f"products 12 vs 40 at last good crawl ({first['run']})"), reason
    assert reason in res["malls.products_vs_last_good"]["observed"]

    # A failed mall is no reference: the next crawl is compared with the last good one (40).
    again = validate_snapshot(fabricate_snapshot(tmp_path / "back", n=30, seed=3), s=s, previous_rows=0)
    assert _checks(again)["demo-jsonld"]["last_good_products"] == 40
    assert _checks(again)["demo-jsonld"]["ok"]
