"""Crawl stage over time: incremental re-crawl, kill-and-resume, DVC snapshot + restore."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from pipelines import versioning
from pipelines.crawl.config import Politeness, demo_config
from pipelines.crawl.pipeline import crawl, run_dir_for
from pipelines.crawl.snapshot import restore_snapshot
from pipelines.malls import build_demo_malls
from pipelines.settings import PROJECT_ROOT, Settings
from tests.helpers.malls import make_fake_world, running_malls


def _listings(snapshot: str) -> dict[str, dict]:
    df = pd.read_parquet(Path(snapshot) / "products.parquet")
    return {lst["product_id"]: lst for ls in df["listings"] for lst in json.loads(ls)}


def test_incremental_recrawl_changed_and_removed(small_world: Path, tmp_path: Path) -> None:
    malls = build_demo_malls(small_world, seed=0)
    with running_malls(malls) as server:
        cfg = demo_config(server.urls(), Politeness.off())
        s = Settings(root=tmp_path / "proj")
        first = crawl(cfg, out=tmp_path / "r0", s=s)
        for m in malls:
            server.set_revision(m.name, 1)
            server.log(m.name).clear()
        second = crawl(cfg, out=tmp_path / "r1", s=s)
        logs = {m.name: server.log(m.name).entries for m in malls}
    before, after = _listings(first["path"]), _listings(second["path"])
    fails = pd.read_parquet(Path(first["path"]) / "failures.parquet")
    failed_before = {urlsplit(u).path for u in fails["url"]}
    assert set(after) == set(before), "removed products must be kept, not deleted"
    n_changed = n_removed = 0
    for m in malls:
        changed, removed = m.changed_at(1), m.removed_at(1)
        n_changed += len(changed)
        n_removed += len(removed)
        states = m.states(1)
        for pid in m.listings:
            lst = after[f"{m.name}:{pid}"]
            assert lst["removed"] == (pid in removed), pid
            if pid in changed:
                assert lst["title"] == states[pid].title and lst["title"] != before[f"{m.name}:{pid}"]["title"]
                assert lst["price"] == states[pid].price
        # Only changed product pages were downloaded again; the rest answered 304.
        full = {urlsplit(e.path).path for e in logs[m.name] if e.status == 200 and e.path.startswith("/p/")}
        assert full == {m.listings[p].path for p in changed}
        n304 = sum(1 for e in logs[m.name] if e.status == 304 and e.path.startswith("/p/"))
        assert n304 == len(m.active_ids(1)) - len(changed)
        # Images did not travel again (only those that failed last time are retried).
        again = {e.path for e in logs[m.name] if e.path.startswith("/img/") and e.status == 200}
        assert again <= failed_before, again - failed_before
    assert n_changed and n_removed
    assert second["stats"]["removed"] >= 1
    assert second["stats"]["products"] == first["stats"]["products"]


_CHILD = """
import sys
from pathlib import Path
from pipelines.crawl.config import Politeness, demo_config
from pipelines.crawl.pipeline import crawl
from pipelines.settings import Settings
cfg = demo_config({"demo-jsonld": sys.argv[1]}, Politeness.off(concurrency_per_domain=1, delay_s=0.03))
crawl(cfg, out=Path(sys.argv[2]), s=Settings(root=Path(sys.argv[3])))
"""


def test_sigkill_and_resume(tmp_path: Path) -> None:
    world = make_fake_world(tmp_path / "world", n=60, seed=11, broken=False)
    mall = build_demo_malls(world, seed=0, duplicate_share=0.0)[0]
    root, out = tmp_path / "proj", tmp_path / "snap"
    run_db = run_dir_for("snap", Settings(root=root)) / mall.name / "run.sqlite"
    with running_malls([mall]) as server:
        base = server.url(mall.name)
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, base, str(out), str(root)], cwd=PROJECT_ROOT, start_new_session=True
        )
        deadline = time.time() + 60
        n = 0
        while time.time() < deadline and n < 10:
            time.sleep(0.2)
            if run_db.exists():
                with sqlite3.connect(run_db) as con:
                    try:
                        n = con.execute("SELECT COUNT(*) FROM products").fetchone()[0]
                    except sqlite3.OperationalError:
                        n = 0
        os.killpg(child.pid, signal.SIGKILL)  # the crawler and its Scrapy subprocess
        child.wait()
        assert 10 <= n < len(mall.listings), f"kill came too late or too early ({n})"
        assert not out.exists()
        killed_at = len(server.log(mall.name).entries)
        info = crawl(demo_config({mall.name: base}, Politeness.off()), out=out, s=Settings(root=root))
        after = server.log(mall.name).entries[killed_at:]
    df = pd.read_parquet(out / "products.parquet")
    assert df["product_id"].is_unique
    assert set(df["sku"]) == set(mall.listings), "products lost across the kill"
    images = pd.read_parquet(out / "images.parquet")
    assert not images.duplicated(["product_id", "source_url"]).any()
    n_images = sum(len(lst.images) for lst in mall.listings.values())
    assert len(images) == n_images
    # The restart did not fetch again the product pages stored before the kill.
    refetched = {e.path for e in after if e.path.startswith("/p/")}
    assert len(refetched) <= len(mall.listings) - n + 2
    assert info["stats"]["products"] == len(mall.listings)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_snapshot_in_data_tree_is_dvc_versioned_and_restorable(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    (root / ".dvc").mkdir(parents=True)
    for rel in (".dvc/config", ".dvc/.gitignore", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / rel, root / rel)
    s = Settings(root=root)
    versioning.ensure_initialised(s)
    world = make_fake_world(tmp_path / "world", n=8, seed=2, broken=False)
    mall = build_demo_malls(world, seed=0, duplicate_share=0.0)[0]
    with running_malls([mall]) as server:
        cfg = demo_config(server.urls(), Politeness.off())
        info = crawl(cfg, snapshot_name="s1", s=s)
        snap = root / "data" / "snapshots" / "s1"
        assert Path(info["path"]) == snap.resolve()
        assert info["snapshot_id"] == f"{versioning.data_hash(s)}:snapshots/s1"
        first = _tree(snap)
        server.set_revision(mall.name, 1)
        info2 = crawl(cfg, snapshot_name="s2", s=s)
    assert info2["snapshot_id"] != info["snapshot_id"]
    assert any((root / ".dvc-storage").rglob("*")), "snapshot not pushed"
    # Lose the working copy and the cache: the snapshot id alone brings back the bytes.
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc" / "cache")
    restored = restore_snapshot(info["snapshot_id"], s)
    assert _tree(restored) == first
    assert not (root / "data" / "snapshots" / "s2").exists()
    restored2 = restore_snapshot(info2["snapshot_id"], s)
    assert (restored2 / "snapshot.json").exists() and _tree(root / "data" / "snapshots" / "s1") == first
