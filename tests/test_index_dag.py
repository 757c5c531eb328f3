"""rebuild_index DAG end to end (dag.test in an isolated Airflow home) with the pixel embedder,
and the CLI functions' import hygiene.

The DAG's embed step is configurable (param ``embedder``); until a champion embedder is
registered in the test world this uses ``pixels`` (a real deterministic embed function).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.settings import PROJECT_ROOT
from tests.test_index import make_catalog

_DAG_TEST = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("rebuild_index")
conf = json.loads(sys.argv[2])
run = dag.test(run_conf=conf)
from airflow.models import TaskInstance
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session
with create_session() as session:
    tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
    states = {ti.task_id: str(ti.state) for ti in tis}
    events = [e.extra for e in session.query(AssetEvent).all()]
print("RESULT " + json.dumps({"state": str(run.state), "tis": states, "events": events}, default=str))
"""


def _run_dag(env: dict, conf: dict, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _DAG_TEST, str(PROJECT_ROOT / "dags"), json.dumps(conf)],
                          env=env, capture_output=True, text=True, timeout=500, cwd=cwd)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(line[7:])


@pytest.mark.slow  # airflow db migrate + two dag.test() runs: ~1-4 min on the shared 2 cores
def test_rebuild_index_dag_build_then_update(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    home = tmp_path / "airflow"
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "TAILOR_ROOT": str(root),
           "TAILOR_DATA_DIR": str(root / "data"), "TAILOR_VAR_DIR": str(root / "var"),
           "TAILOR_MLFLOW_DIR": str(root / "mlflow"),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "PYTHONPATH": str(PROJECT_ROOT)}
    airflow = str(Path(sys.executable).parent / "airflow")
    mig = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert mig.returncode == 0, mig.stderr[-3000:]
    cat = make_catalog(tmp_path / "cat", n=120)
    conf = {"embedder": "pixels", "catalog": str(cat), "images_root": str(tmp_path / "cat"),
            "recall_target": 0.95}
    res = _run_dag(env, conf, tmp_path)
    assert res["state"].endswith("success"), res
    assert set(res["tis"]) == {"plan", "embed", "build", "register"}
    extras = [e for e in res["events"] if e and "version" in e]
    assert extras and extras[-1]["version"] == "1"
    first = Path(extras[-1]["index_dir"])
    meta = json.loads((first / "meta.json").read_text())
    assert meta["kind"] == "build" and meta["recall"] >= 0.95 and meta["ntotal"] == 120
    # Second run: 5 products removed, 6 added -> an incremental update registered as v2.
    df = pd.read_parquet(cat)
    make_catalog(tmp_path / "cat2", n=6, start=500, seed=2)
    extra = pd.read_parquet(tmp_path / "cat2" / "catalog.parquet")
    extra["image"] = [str(tmp_path / "cat2" / p) for p in extra["image"]]
    pd.concat([df.iloc[5:], extra]).to_parquet(cat, index=False)
    res2 = _run_dag(env, conf, tmp_path)
    assert res2["state"].endswith("success"), res2
    extras = [e for e in res2["events"] if e and "version" in e]
    assert extras[-1]["version"] == "2"
    meta2 = json.loads((Path(extras[-1]["index_dir"]) / "meta.json").read_text())
    assert meta2["kind"] == "update" and meta2["added"] == 6 and meta2["removed"] == 5 and meta2["ntotal"] == 121
    # Serving loads exactly the champion version.
    from pipelines.index.store import load_index
    from pipelines.settings import Settings

    loaded = load_index("models:/tailor-index@champion", s=Settings(root=root))
    assert loaded.meta["version"] == meta2["version"]


def test_cli_functions_keep_heavy_imports_out() -> None:
    code = ("import sys, pipelines.index.cli as c; "
            "assert all(callable(getattr(c, n)) for n in ('index_build_command', 'index_update_command', "
            "'index_search_command', 'bench_index_command')); "
            "print([m for m in ('faiss','numpy','pandas','mlflow','torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]", out.stderr
