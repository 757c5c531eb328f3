"""DAG integrity: every file in dags/ imports cleanly and keeps heavy libraries out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.settings import PROJECT_ROOT

DAG_FILES = sorted(p for p in (PROJECT_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = ["torch", "timm", "faiss", "mlflow", "great_expectations", "bentoml", "torchvision", "scrapy", "pandas"]

_PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dagmod", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
from airflow.sdk import DAG
dags = [v.dag_id for v in vars(mod).values() if isinstance(v, DAG)]
print(json.dumps({"heavy": [m for m in json.loads(sys.argv[2]) if m in sys.modules], "dags": dags}))
"""


def test_there_are_dags() -> None:
    assert DAG_FILES, "dags/ holds no DAG file"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_without_heavy_modules(path) -> None:
    # A fresh interpreter per file: sys.modules then shows exactly what the file pulled in.
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"{path.name} imports heavy modules at parse time: {result['heavy']}"


def test_dagbag_has_no_import_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert bag.import_errors == {}
    assert "demo_world" in bag.dag_ids
    for dag in bag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"


def test_every_dvc_committing_task_queues_in_the_dvc_pool() -> None:
    """Issue 14, finding 12: DVC commands run one at a time across DAGs (one-slot pool)."""
    from airflow.dag_processing.dagbag import DagBag

    from pipelines.pools import DVC_POOL

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    in_pool = {(d.dag_id, t.task_id) for d in bag.dags.values() for t in d.tasks if t.pool == DVC_POOL}
    # the tasks that commit data.dvc: the crawl's snapshot and the validated training set
    assert in_pool == {("crawl_malls", "publish"), ("validate_catalog", "version")}


def _assets_of(condition):  # noqa: ANN001, ANN202
    """The Assets of a schedule condition (an Asset, or AssetAny/AssetAll nesting them)."""
    if condition is None:
        return
    if hasattr(condition, "uri"):
        yield condition
    for inner in getattr(condition, "objects", ()):
        yield from _assets_of(inner)


def test_the_asset_chain_is_closed() -> None:
    """Every Asset a DAG is scheduled on is published by another DAG's task, every published
    Asset is consumed or marked terminal, and all of them come from pipelines.assets."""
    from airflow.dag_processing.dagbag import DagBag

    from pipelines import assets

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    from airflow.sdk import Asset

    known = {a.uri for a in vars(assets).values() if isinstance(a, Asset)}
    consumed: dict[str, set[str]] = {}
    published: dict[str, set[str]] = {}
    for dag in bag.dags.values():
        for asset in _assets_of(getattr(dag.timetable, "asset_condition", None)):
            consumed.setdefault(asset.uri, set()).add(dag.dag_id)
        for t in dag.tasks:
            for out in t.outlets:
                published.setdefault(out.uri, set()).add(dag.dag_id)
    assert consumed and published
    assert set(consumed) | set(published) <= known, "an Asset URI is spelled outside pipelines.assets"
    assert set(consumed) <= set(published), f"scheduled on, never published: {set(consumed) - set(published)}"
    assert set(published) - set(consumed) == {a.uri for a in assets.TERMINAL}
    # the chain, end to end
    assert consumed[assets.CATALOG.uri] == {"validate_catalog", "rebuild_index"}
    assert consumed[assets.SEARCH_INDEX.uri] == {"deploy_bento"} and published[assets.CHAMPIONS.uri] == {
        "retrain_models"
    }


def test_training_tasks_queue_in_the_train_pool_not_a_parse_time_cpu_count() -> None:
    from airflow.dag_processing.dagbag import DagBag

    from pipelines.pools import TRAIN_POOL

    dag = DagBag(dag_folder=str(PROJECT_ROOT / "dags")).dags["retrain_models"]
    train = dag.get_task("train")
    assert train.pool == TRAIN_POOL and train.max_active_tis_per_dag is None
