"""rebuild_index DAG end to end (dag.test in an isolated Airflow home) with the pixel embedder,
and the CLI functions' import hygiene.

The DAG's embed step is configurable (param ``embedder``); until a champion embedder is
registered in the test world this uses ``pixels`` (a real deterministic embed function).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.settings import PROJECT_ROOT
from tests.airflow_harness import isolated_airflow, run_dag_test
from tests.helpers.catalogs import make_catalog


@pytest.mark.slow  # airflow db migrate + two dag.test() runs: ~1-4 min on the shared 2 cores
def test_rebuild_index_dag_build_then_update(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    env = isolated_airflow(tmp_path, root)
    cat = make_catalog(root / "data" / "cat", n=120)  # DAG paths: under the data or var root
    conf = {"embedder": "pixels", "catalog": str(cat), "images_root": str(root / "data" / "cat"), "recall_target": 0.95}
    res = run_dag_test(env, "rebuild_index", conf, tmp_path)
    assert res["state"].endswith("success"), res
    assert set(res["tis"]) == {"plan", "embed", "build", "attributes", "register"}
    extras = [e["extra"] for e in res["events"] if e["extra"] and "version" in e["extra"]]
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
    res2 = run_dag_test(env, "rebuild_index", conf, tmp_path)
    assert res2["state"].endswith("success"), res2
    extras = [e["extra"] for e in res2["events"] if e["extra"] and "version" in e["extra"]]
    assert extras[-1]["version"] == "2"
    meta2 = json.loads((Path(extras[-1]["index_dir"]) / "meta.json").read_text())
    assert meta2["kind"] == "update" and meta2["added"] == 6 and meta2["removed"] == 5 and meta2["ntotal"] == 121
    # The attributes task laid out every product of the new version (no tagger: pixel embedder).
    attrs = pd.read_parquet(Path(extras[-1]["index_dir"]) / "attributes.parquet")
    assert len(attrs) == 121 and set(attrs["product_id"]) == set(pd.read_parquet(cat)["product_id"].astype(str))
    assert attrs[["x", "y"]].notna().all().all() and attrs["color"].isna().all()
    assert meta2["attributes"]["n"] == 121 and meta2["attributes"]["tagger_version"] is None
    # Serving loads exactly the champion version.
    from pipelines.index.store import load_index
    from pipelines.settings import Settings

    loaded = load_index("models:/tailor-index@champion", s=Settings(root=root))
    assert loaded.meta["version"] == meta2["version"]


def test_cli_functions_keep_heavy_imports_out() -> None:
    code = (
        "import sys, pipelines.index.cli as c; "
        "assert all(callable(getattr(c, n)) for n in ('index_build_command', 'index_update_command', "
        "'index_search_command', 'bench_index_command')); "
        "print([m for m in ('faiss','numpy','pandas','mlflow','torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]", out.stderr
