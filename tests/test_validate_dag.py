"""``validate_catalog`` end to end with ``dag.test()``: a crawled demo snapshot gives a
training set (and the Asset event); a snapshot tripping a critical expectation fails the run
with the message, and no training set is written. Runs in a subprocess with an isolated
AIRFLOW_HOME after ``airflow db migrate``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.assets import TRAINING_SET
from pipelines.settings import Settings
from tests.airflow_harness import events_of, isolated_airflow, run_dag_test
from tests.helpers.snapshots import fabricate_snapshot


@pytest.mark.slow
def test_dag_end_to_end_from_crawled_snapshot(demo_malls, tmp_path: Path) -> None:
    from pipelines.crawl.config import Politeness, demo_config
    from pipelines.crawl.pipeline import crawl

    root = tmp_path / "proj"
    demo_malls.reset()
    cfg = demo_config({n: demo_malls.url(n) for n in demo_malls.malls}, Politeness.off())
    info = crawl(cfg, out=root / "data" / "snapshots" / "demo", s=Settings(root=root), state=tmp_path / "state")
    good = info["path"]
    bad = fabricate_snapshot(root / "data" / "snapshots" / "bad", n=20, mutate=lambda p, i: (p.assign(price=-1.0), i))
    env = isolated_airflow(tmp_path, root)
    res = {
        name: run_dag_test(env, "validate_catalog", {"snapshot": str(snap), "previous_rows": 0}, tmp_path)
        for name, snap in (("good", good), ("bad", bad))
    }
    log = res["good"]["log"] + res["bad"]["log"]
    assert res["good"]["state"] == "success", log[-4000:]
    assert res["good"]["tis"]["version"] == "success"
    assert res["bad"]["state"] == "failed"
    assert res["bad"]["tis"]["validate"] == "failed"
    assert res["bad"]["tis"]["version"] in ("upstream_failed", "skipped")
    # The failure message names the expectation and links the report; the summary URL is logged.
    assert "critical expectation(s) failed" in log and "products.price_positive" in log
    assert "report: file://" in log and "data quality summary:" in log
    sets = list((root / "data" / "training-sets").glob("*/training_set.json"))
    assert len(sets) == 1
    meta = json.loads(sets[0].read_text())
    assert meta["validation"]["status"] in ("passed", "warning")
    # The good run published the Asset `training-set` naming this training set; the failed
    # run published nothing (the harness lists every event of the environment so far).
    good_events = events_of(res["good"], TRAINING_SET)
    assert len(good_events) == 1, res["good"]["events"]
    assert Path(good_events[0]["extra"]["path"]).resolve() == sets[0].parent.resolve()
    assert good_events[0]["extra"]["data_version"]
    assert events_of(res["bad"], TRAINING_SET) == good_events
    tagger = pd.read_parquet(sets[0].parent / "manifests" / "tagger.parquet")
    assert len(tagger) > 0
    assert (root / "data.dvc").exists()


def test_an_asset_triggered_run_validates_the_latest_registered_snapshot(tmp_path: Path) -> None:
    """No ``snapshot`` in the conf (what an Asset-triggered run gets): the run resolves the
    newest snapshot the crawler registered, not the alphabetically last folder."""
    root = tmp_path / "proj"
    s = Settings(root=root)
    newer = fabricate_snapshot(s.snapshots_dir / "crawl-a", n=40, seed=1)
    older = fabricate_snapshot(s.snapshots_dir / "crawl-b", n=40, seed=2)
    s.crawl_state_dir.mkdir(parents=True)
    (s.crawl_state_dir / "snapshots.jsonl").write_text(
        "".join(json.dumps({"snapshot_id": f"v:{p.name}", "path": str(p)}) + "\n" for p in (older, newer))
    )
    env = isolated_airflow(tmp_path, root)
    res = run_dag_test(env, "validate_catalog", {"previous_rows": 0}, tmp_path)
    assert res["state"] == "success", res["log"][-4000:]
    assert "validation" in res["log"]
    sets = list(s.training_sets_dir.glob("*/training_set.json"))
    assert len(sets) == 1
    meta = json.loads(sets[0].read_text())
    assert str(newer) in json.dumps(meta) and str(older) not in json.dumps(meta), meta
