"""Run a DAG with ``dag.test()`` in an isolated Airflow home (own sqlite DB, the repo's dags/).

Each run is a fresh interpreter, so the DAG's tasks import exactly what they would on a
worker, and the test process never imports Airflow's ORM or the heavy stage libraries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import PROJECT_ROOT

if TYPE_CHECKING:
    from airflow.sdk import Asset

_DAG_TEST = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag(sys.argv[2])
run = dag.test(run_conf=json.loads(sys.argv[3]))
from airflow.models import TaskInstance
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session
with create_session() as session:
    tis = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id).all()
    states = {}
    for ti in tis:
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state)
    events = [{"uri": e.asset.uri, "extra": e.extra} for e in session.query(AssetEvent).all()]
print("RESULT " + json.dumps({"state": str(run.state), "tis": states, "events": events}, default=str))
"""


def isolated_airflow(tmp_path: Path, root: Path, **extra_env: str) -> dict[str, str]:
    """Environment for an Airflow home under ``tmp_path`` and a Tailor project at ``root``;
    the metadata DB is migrated before returning."""
    home = tmp_path / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "TAILOR_ROOT": str(root),
        "TAILOR_DATA_DIR": str(root / "data"),
        "TAILOR_VAR_DIR": str(root / "var"),
        "TAILOR_MLFLOW_DIR": str(root / "mlflow"),
        "PYTHONPATH": str(PROJECT_ROOT),
        **extra_env,
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    mig = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert mig.returncode == 0, mig.stderr[-3000:]
    from pipelines.pools import DVC_POOL, TRAIN_POOL  # as `tailor up` does: tasks in a missing pool never run

    for name, slots in ((DVC_POOL, "1"), (TRAIN_POOL, "1")):
        pool = subprocess.run(
            [airflow, "pools", "set", name, slots, "as tailor up"], env=env, capture_output=True, text=True, timeout=120
        )
        assert pool.returncode == 0, pool.stderr[-3000:]
    return env


def run_dag_test(env: dict[str, str], dag_id: str, conf: dict, cwd: Path, timeout_s: int = 900) -> dict:
    """``dag.test(run_conf=conf)`` in a subprocess; returns run state, task states, Asset
    events and ``log`` (the run's whole output, where task logs and error messages land)."""
    proc = subprocess.run(
        [sys.executable, "-c", _DAG_TEST, str(PROJECT_ROOT / "dags"), dag_id, json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, (proc.stdout[-3000:], proc.stderr[-5000:])
    return {**json.loads(line[7:]), "log": proc.stdout + proc.stderr}


def events_of(res: dict, asset: Asset) -> list[dict]:
    """The Asset events of ``res`` (a ``run_dag_test`` result) for ``asset``. Airflow stores a
    URI in normal form (``tailor://training-set/``), so both sides are compared without the
    trailing slash."""
    return [e for e in res["events"] if e["uri"].rstrip("/") == asset.uri.rstrip("/")]
