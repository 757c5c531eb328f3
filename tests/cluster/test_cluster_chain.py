"""The cluster profile, proven by running it: the real chain on Postgres-backed Airflow with
the CeleryExecutor (two workers, Redis broker), MLflow on Postgres with S3 artifacts and the
DVC remote in S3 (pipelines/cluster.py; README, "Scaling out").

One module-scoped run of ``tailor demo`` on a small world, in a copy of this project
(pipelines/chainbench.py) whose ``TAILOR_PROFILE`` is ``cluster``: crawl -> validate -> retrain (one epoch) -> index ->
deploy. While the retrain runs, the Celery worker of a training task is killed (SIGKILL);
the tests then read what the run left in the stores.

The models train one epoch and the copy's gate promotes whatever beats nothing (thresholds
0, baseline margin -1): this suite proves the infrastructure carries the chain to a deploy.
Model quality is the gate's job, tested with the shipped thresholds in test_retrain_dag.py.

Run with ``make test-cluster`` (``.ci/run`` installs redis-server first).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipelines.chainbench import copy_project, demo_argv, down, project_env, settings_for
from pipelines.settings import Settings
from tests.helpers import missing

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]

CHAIN = ("crawl_malls", "validate_catalog", "retrain_models", "rebuild_index", "deploy_bento")
WORKERS = {"tailor-worker-1", "tailor-worker-2"}


def _tree_md5(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run ``tailor demo`` on the cluster profile, kill a worker mid-training, and return what
    the tests check: the settings, the chain's runs and task instances, the killed task."""
    from pipelines import cluster

    try:
        cluster.require_binaries()
    except RuntimeError as exc:
        missing(str(exc))
    base = tmp_path_factory.mktemp("cluster")
    root = copy_project(base / "proj")
    env, tailor_env = project_env(root, "cluster", epochs=1)
    s = settings_for(tailor_env)
    log = base / "demo.log"
    t0 = time.monotonic()
    try:
        with log.open("w") as out:
            demo = subprocess.Popen(
                demo_argv(products=120, scenes=60), cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT
            )
            killed = _kill_a_training_worker(s, demo, log)
            rc = demo.wait(timeout=2400)
        elapsed = time.monotonic() - t0
        text = log.read_text(errors="replace")
        assert rc == 0, text[-6000:]
        yield {
            "s": s,
            "root": root,
            "env": env,
            "log": text,
            "killed": killed,
            "elapsed_s": elapsed,
            **_chain_records(s),
        }
    finally:
        down(root, env)


def _kill_a_training_worker(s: Settings, demo: subprocess.Popen, log: Path) -> dict[str, Any]:
    """Wait for a retrain ``train`` task to run for a few seconds, then SIGKILL the Celery
    worker running it (its whole process group: the task goes with it)."""
    from pipelines.airflow_api import AirflowClient
    from pipelines.services import read_pid_file, services

    deadline = time.monotonic() + 1800
    client = None
    while time.monotonic() < deadline:
        assert demo.poll() is None, "tailor demo ended before a training task ran:\n" + log.read_text()[-4000:]
        time.sleep(1.0)
        try:
            client = client or AirflowClient.from_settings(s)
            runs = client.request("GET", "/dags/retrain_models/dagRuns", params={"limit": 5})["dag_runs"]
        except Exception:  # noqa: BLE001 - Airflow still starting
            continue
        for run in runs:
            tis = client.task_instances("retrain_models", run["dag_run_id"])
            for ti in tis:
                started = _ts(ti.get("start_date"))
                if (
                    ti["task_id"] == "train"
                    and ti["state"] == "running"
                    and ti.get("hostname") in WORKERS
                    and started
                    and (datetime.now(started.tzinfo) - started).total_seconds() > 4
                ):
                    name = "airflow-" + ti["hostname"].removeprefix("tailor-")
                    pid = read_pid_file(services(s)[name].pid_file(s))
                    assert pid, f"no live pid for {name}"
                    os.killpg(pid, signal.SIGKILL)
                    return {
                        "run_id": run["dag_run_id"],
                        "map_index": ti["map_index"],
                        "hostname": ti["hostname"],
                        "service": name,
                    }
    raise AssertionError("no training task ran within 30 minutes")


def _chain_records(s: Settings) -> dict[str, Any]:
    """Every run of the chain's DAGs and their task instances, from Airflow's REST API."""
    from pipelines.airflow_api import AirflowClient

    client = AirflowClient.from_settings(s)
    runs, tis = {}, []
    for dag_id in CHAIN:
        runs[dag_id] = client.request("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 20})["dag_runs"]
        for run in runs[dag_id]:
            tis += [{**ti, "dag_id": dag_id} for ti in client.task_instances(dag_id, run["dag_run_id"])]
    return {"runs": runs, "tis": tis}


def test_chain_deployed_on_the_cluster(cluster_run: dict[str, Any]) -> None:
    for dag_id in CHAIN:
        assert any(r["state"] == "success" for r in cluster_run["runs"][dag_id]), (dag_id, cluster_run["runs"][dag_id])
    # the crawl reached every synthetic mall (a catalog from nothing would still "run"); the
    # photo mall is not served in this run (TAILOR_PHOTOS_DIR points nowhere)
    stats = [json.loads(p.read_text()) for p in Path(cluster_run["root"], "data", "snapshots").glob("*/stats.json")]
    yielded = {name for st in stats for name, m in st["malls"].items() if m["products"] > 0}
    assert yielded >= {"demo-jsonld", "demo-microdata", "demo-css"}, stats
    assert "Search endpoint: http" in cluster_run["log"], cluster_run["log"][-3000:]
    print(f"\ncluster chain (tailor demo, 120 products, 60 scenes, 1 epoch): {cluster_run['elapsed_s']:.0f} s")


def test_tasks_ran_on_both_workers(cluster_run: dict[str, Any]) -> None:
    hosts = {ti.get("hostname") for ti in cluster_run["tis"] if ti["state"] == "success"}
    assert WORKERS <= hosts, hosts
    # Task start latency under Celery: queued -> running, over every task of the chain.
    waits = [
        (_ts(ti["start_date"]) - _ts(ti["queued_when"])).total_seconds()  # type: ignore[operator]
        for ti in cluster_run["tis"]
        if ti.get("queued_when") and ti.get("start_date")
    ]
    assert waits
    waits.sort()
    print(
        f"\ntask start latency (queued -> running), {len(waits)} tasks: median {statistics.median(waits):.2f} s, "
        f"p90 {waits[int(0.9 * (len(waits) - 1))]:.2f} s, max {waits[-1]:.2f} s"
    )


def test_killed_worker_task_retried_on_the_other(cluster_run: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    k = cluster_run["killed"]
    ti = next(
        t
        for t in cluster_run["tis"]
        if t["dag_id"] == "retrain_models"
        and t["dag_run_id"] == k["run_id"]
        and t["task_id"] == "train"
        and t["map_index"] == k["map_index"]
    )
    assert ti["state"] == "success" and ti["try_number"] >= 2, ti
    assert ti["hostname"] in WORKERS - {k["hostname"]}, (ti["hostname"], k)
    # No duplicate output: one training directory and one registered version per model.
    s = cluster_run["s"]
    run_dirs = sorted(Path(s.var_dir, "runs").glob("*/*/*"))  # <training set>/<model>/<profile-key>
    per_model: dict[str, int] = {}
    for d in run_dirs:
        per_model[d.parent.name] = per_model.get(d.parent.name, 0) + 1
    assert per_model and all(n == 1 for n in per_model.values()), per_model
    client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
    for m in per_model:
        versions = client.search_model_versions(f"name='tailor-{m}'")
        assert len(versions) == 1, (m, [v.version for v in versions])


def test_runs_metrics_and_models_are_in_postgres(cluster_run: dict[str, Any]) -> None:
    import psycopg

    s = cluster_run["s"]
    url = str(s.mlflow_backend_uri).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as con:
        n_runs, n_metrics, n_versions = (
            con.execute(q).fetchone()[0]
            for q in (  # type: ignore[index]
                "SELECT count(*) FROM runs",
                "SELECT count(*) FROM metrics",
                "SELECT count(*) FROM model_versions",
            )
        )
        models = {r[0] for r in con.execute("SELECT name FROM registered_models")}
    assert n_runs >= 4 and n_metrics > 0 and n_versions >= 4, (n_runs, n_metrics, n_versions)
    assert {"tailor-detector", "tailor-parser", "tailor-tagger", "tailor-embedder"} <= models
    with psycopg.connect(str(s.airflow_db_url).replace("postgresql+psycopg://", "postgresql://")) as con:
        dags = {r[0] for r in con.execute("SELECT DISTINCT dag_id FROM dag_run WHERE state = 'success'")}
    assert set(CHAIN) <= dags
    with psycopg.connect(str(s.closet_db_url).replace("postgresql+psycopg://", "postgresql://")) as con:
        assert con.execute("SELECT count(*) FROM users").fetchone()[0] >= 1  # type: ignore[index]
    # Nothing fell back to a local SQLite file.
    assert not list(Path(cluster_run["root"]).rglob("mlflow.db")) and not Path(s.airflow_home, "airflow.db").exists()


def test_artifacts_and_snapshots_are_in_the_object_store(cluster_run: dict[str, Any]) -> None:
    from pipelines import cluster

    s, root = cluster_run["s"], cluster_run["root"]
    mlflow_keys = cluster.object_keys(s, "mlflow/")
    dvc_keys = cluster.object_keys(s, "dvc/")
    assert any(k.endswith("MLmodel") for k in mlflow_keys), mlflow_keys[:20]
    assert dvc_keys
    local_artifacts = (
        [p for p in Path(s.mlflow_artifacts_dir).rglob("*") if p.is_file()]
        if Path(s.mlflow_artifacts_dir).exists()
        else []
    )
    assert local_artifacts == []
    storage = root / ".dvc-storage"
    assert not storage.exists() or not any(p.is_file() for p in storage.rglob("*"))


def test_a_snapshot_restored_from_the_object_store_is_byte_identical(
    cluster_run: dict[str, Any], tmp_path: Path
) -> None:
    root, env = cluster_run["root"], cluster_run["env"]
    fresh = tmp_path / "restore"
    (fresh / ".dvc").mkdir(parents=True)
    for f in ("config", "config.local"):
        shutil.copy2(root / ".dvc" / f, fresh / ".dvc" / f)
    shutil.copy2(root / "data.dvc", fresh / "data.dvc")
    dvc = str(Path(sys.executable).parent / "dvc")
    t0 = time.monotonic()
    done = subprocess.run([dvc, "pull", "data.dvc"], cwd=fresh, env=env, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    restored, original = _tree_md5(fresh / "data"), _tree_md5(root / "data")
    assert restored and restored == original
    size = sum((fresh / "data" / p).stat().st_size for p in restored) / 1e6
    print(f"\nsnapshot restore from the object store: {len(restored)} files, {size:.1f} MB in {took:.1f} s")
