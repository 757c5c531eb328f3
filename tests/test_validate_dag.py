"""``validate_catalog`` end to end with ``dag.test()``: a crawled demo snapshot gives a
training set (and the Asset event); a snapshot tripping a critical expectation fails the run
with the message, and no training set is written. Runs in a subprocess with an isolated
AIRFLOW_HOME after ``airflow db migrate``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.settings import PROJECT_ROOT, Settings
from pipelines.validate.testing import fabricate_snapshot

_SCRIPT = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.get_dag("validate_catalog")
out = {}
for name, snap in (("good", sys.argv[2]), ("bad", sys.argv[3])):
    dr = dag.test(run_conf={"snapshot": snap, "previous_rows": 0})
    out[name] = {"state": str(dr.state), "tis": {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_dag_end_to_end_from_crawled_snapshot(demo_malls, tmp_path: Path) -> None:
    from pipelines.crawl.config import Politeness, demo_config
    from pipelines.crawl.pipeline import crawl

    root = tmp_path / "proj"
    demo_malls.reset()
    cfg = demo_config({n: demo_malls.url(n) for n in demo_malls.malls}, Politeness.off())
    info = crawl(cfg, out=root / "data" / "snapshots" / "demo", s=Settings(root=root),
                 state=tmp_path / "state")
    good = info["path"]
    bad = fabricate_snapshot(tmp_path / "bad-snap", n=20,
                             mutate=lambda p, i: (p.assign(price=-1.0), i))
    home = tmp_path / "airflow"
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "TAILOR_ROOT": str(root),
           "PYTHONPATH": str(PROJECT_ROOT)}
    airflow = str(Path(sys.executable).parent / "airflow")
    mig = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert mig.returncode == 0, mig.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(PROJECT_ROOT / "dags" / "validate_catalog.py"), good, str(bad)],
                          env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, log[-4000:]
    res = json.loads(line[-1][7:])
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
    tagger = pd.read_parquet(sets[0].parent / "manifests" / "tagger.parquet")
    assert len(tagger) > 0
    assert (root / "data.dvc").exists()
