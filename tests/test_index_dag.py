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


def _register_champion(name: str, s, training_set: Path) -> str:
    """An untrained (pretrained-trunk) model of ``name`` registered and promoted through the
    real registry and gate, as retrain_models would leave it."""
    import torch

    from pipelines import gate, registry
    from pipelines.train import build_model, model_config
    from tests.helpers.registry import FakeTrainResult

    torch.manual_seed(0)
    model = build_model(name, model_config(name, "demo")).eval()
    metrics = {"score": 0.5, "baseline_score": 0.1}
    res = FakeTrainResult(model=model, metrics=metrics, config=model.tailor_config, history=[], input_example=None)
    version = registry.log_training_run(name, res, training_set, "snap-1", s=s)["version"]
    cfg = gate.GateConfig(thresholds={name: {"score": 0.2}}, tolerance=0.02)
    assert registry.gate(name, version, metrics, "ts-1", cfg, s=s).promoted
    return version


@pytest.mark.slow
def test_rebuild_index_dag_with_the_champion_embedder_and_detector_crops(
    tmp_path: Path, tiny_training_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG with the registered @champion embedder, catalog images cropped by the
    @champion detector (``crop_with=champion``): the index records both versions, and a
    catalog image embedded the same way outside the DAG finds its own product first."""
    from PIL import Image

    from pipelines.index.embed import champion_embed_fn
    from pipelines.index.flat import load_index
    from pipelines.settings import Settings, get_settings

    root = tmp_path / "proj"
    s = Settings(root=root, data_dir=root / "data", var_dir=root / "var", mlflow_dir=root / "mlflow")
    Path(s.mlflow_dir).mkdir(parents=True)
    versions = {m: _register_champion(m, s, tiny_training_set) for m in ("embedder", "detector")}
    env = isolated_airflow(tmp_path, root)
    cat = make_catalog(root / "data" / "cat", n=40)
    conf = {"embedder": "champion", "crop_with": "champion", "catalog": str(cat), "images_root": str(cat.parent)}
    res = run_dag_test(env, "rebuild_index", conf, tmp_path)
    assert res["state"].endswith("success"), res["log"][-4000:]
    extras = [e["extra"] for e in res["events"] if e["extra"] and "version" in e["extra"]]
    index_dir = Path(extras[-1]["index_dir"])
    meta = json.loads((index_dir / "meta.json").read_text())
    assert meta["ntotal"] == 40
    expected = f"tailor-embedder/v{versions['embedder']}+crop:tailor-detector/v{versions['detector']}"
    assert meta["embedder_version"] == expected

    for key, value in {"TAILOR_ROOT": root, "TAILOR_MLFLOW_DIR": s.mlflow_dir}.items():
        monkeypatch.setenv(key, str(value))
    get_settings.cache_clear()
    try:
        embed = champion_embed_fn("models:/tailor-embedder@champion", "models:/tailor-detector@champion")
        assert embed.version == meta["embedder_version"]
        products = pd.read_parquet(cat)
        index = load_index(index_dir)
        for i in (0, 17, 33):
            with Image.open(cat.parent / products["image"][i]) as im:
                hits = index.search(embed([im.convert("RGB")]), 3)[0]
            assert hits[0]["product_id"] == products["product_id"][i], hits
    finally:
        get_settings.cache_clear()
