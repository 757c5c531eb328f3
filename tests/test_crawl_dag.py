"""crawl_malls DAG end to end (dag.test in an isolated Airflow home), CLI functions,
benchmark, and a crawl of the real-photo mall."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipelines.crawl.config import Politeness, demo_config
from pipelines.malls import build_demo_malls, build_photo_mall
from pipelines.settings import PROJECT_ROOT
from tests.airflow_harness import isolated_airflow, run_dag_test
from tests.helpers.malls import make_fake_world, running_malls


def _project(tmp: Path) -> Path:
    root = tmp / "proj"
    (root / ".dvc").mkdir(parents=True)
    for rel in (".dvc/config", ".dvc/.gitignore", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / rel, root / rel)
    return root


@pytest.mark.slow
def test_crawl_malls_dag_runs_end_to_end(tmp_path: Path) -> None:
    root = _project(tmp_path)
    world = make_fake_world(tmp_path / "world", n=12, seed=4, broken=False)
    malls = build_demo_malls(world, seed=0)
    from pipelines import versioning
    from pipelines.settings import Settings

    versioning.ensure_initialised(Settings(root=root))
    env = isolated_airflow(tmp_path, root)
    with running_malls(malls) as server:
        cfg = demo_config(server.urls(), Politeness.off())
        malls_file = root / "var" / "malls.yaml"  # DAG paths: under the data or var root
        malls_file.parent.mkdir(parents=True, exist_ok=True)
        malls_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        res = run_dag_test(
            env, "crawl_malls", {"malls_file": str(malls_file), "polite": False, "snapshot_name": "dagsnap"}, tmp_path
        )
    assert res["state"].endswith("success"), res
    assert sum(1 for k in res["tis"] if k.startswith("crawl_mall[")) == 3
    snap = root / "data" / "snapshots" / "dagsnap"
    df = pd.read_parquet(snap / "products.parquet")
    assert set(df["sku"]) == {p for m in malls for p in m.listings}
    ids = [e["extra"].get("snapshot") for e in res["events"] if e["extra"]]
    assert ids and ids[-1].endswith(":snapshots/dagsnap")


@pytest.mark.slow
def test_crawl_malls_dag_refuses_a_path_outside_the_roots(tmp_path: Path) -> None:
    """A run parameter pointing outside the data and var roots fails the run at its first
    task, naming the parameter; nothing is written there (issue 14, finding 9)."""
    root = _project(tmp_path)
    env = isolated_airflow(tmp_path, root)
    outside = tmp_path / "outside" / "snap"
    res = run_dag_test(env, "crawl_malls", {"out": str(outside), "polite": False}, tmp_path)
    assert not res["state"].endswith("success"), res
    assert "DAG parameter 'out'" in res["log"] and "outside the roots" in res["log"]
    assert not outside.exists()
    assert not any(k.startswith("crawl_mall[") for k in res["tis"])


def test_cli_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from pipelines.crawl.cli import bench_crawl_command, crawl_command

    app = typer.Typer()
    app.command("crawl")(crawl_command)
    app.command("bench-crawl")(bench_crawl_command)
    world = make_fake_world(tmp_path / "world", n=12, seed=1, broken=False)
    mall = build_demo_malls(world, seed=0, duplicate_share=0.0)[0]
    assert mall.listings
    monkeypatch.setenv("TAILOR_ROOT", str(tmp_path / "proj"))
    from pipelines.settings import get_settings

    get_settings.cache_clear()
    try:
        with running_malls([mall]) as server:
            f = tmp_path / "malls.yaml"
            f.write_text(yaml.safe_dump(demo_config(server.urls(), Politeness.off()).model_dump(mode="json")))
            r = CliRunner().invoke(
                app, ["crawl", "--malls", str(f), "--out", str(tmp_path / "snap"), "--mall", mall.name]
            )
            assert r.exit_code == 0, r.output
            assert f"{len(mall.listings)} products" in r.output and "not DVC-versioned" in r.output
            bad = tmp_path / "bad.yaml"
            bad.write_text("malls: [{name: x}]")
            r = CliRunner().invoke(app, ["crawl", "--malls", str(bad)])
            assert r.exit_code == 2 and "invalid crawl config" in r.output
    finally:
        get_settings.cache_clear()
    # The CLI module keeps heavy imports out of module level.
    code = (
        "import sys, pipelines.crawl.cli; print([m for m in ('scrapy','pandas','extruct','PIL') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.bench
def test_benchmark_prints_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.crawl.bench import run_benchmark

    res = run_benchmark(products=120, delay_s=0.2, polite_pages=10)
    out = capsys.readouterr().out
    assert "pages/s" in out and "images/s" in out
    # Throughput is a printed figure, not an assertion; the crawl itself must be complete.
    assert res["off"]["pages"] >= res["products"] and res["off"]["images"] > 0
    # Politeness on: the measured rate never exceeds the configured one (5% slack for timers).
    assert res["polite"]["measured_rate"] <= res["polite"]["configured_rate"] * 1.05
    # One arrival gap can shrink when the previous request was delayed by thread scheduling
    # (the crawler still waited the full delay after sending it); the median cannot.
    assert res["polite"]["median_gap_s"] >= 0.2 * 0.95


@pytest.mark.shared_data
def test_photo_mall_crawl(shared_photos: Path, tmp_path: Path) -> None:
    from pipelines.crawl.pipeline import crawl
    from pipelines.malls.photos import read_labels
    from pipelines.settings import Settings

    limit = 200
    mall = build_photo_mall(shared_photos, limit=limit)
    labels = {Path(r["image"]).stem: r["label"] for r in read_labels(shared_photos / "labels.csv", limit=limit)}
    with running_malls([mall]) as server:
        info = crawl(
            demo_config(server.urls(), Politeness.off()),
            out=tmp_path / "snap",
            s=Settings(root=tmp_path / "proj"),
            state=tmp_path / "state",
        )
    df = pd.read_parquet(Path(info["path"]) / "products.parquet")
    got = dict(zip(df["sku"], df["category"], strict=True))
    assert set(got) == set(mall.listings)
    for pid, cat in got.items():
        assert cat == labels[pid]  # labels as-is, "Not sure"/"Skip"/"Other" included
    odd = {"Not sure", "Skip", "Other"} & set(got.values())
    assert odd, "the first 200 photos carry none of the odd labels"
    images = pd.read_parquet(Path(info["path"]) / "images.parquet")
    fails = pd.read_parquet(Path(info["path"]) / "failures.parquet")
    assert len(images) + len(fails[fails["kind"] != "robots"]) == len(mall.listings)
