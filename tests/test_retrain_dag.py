"""retrain_models end to end with dag.test(): mapped train -> evaluate -> gate per model,
real MLflow sqlite registry, Asset `champions` only when a champion changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.airflow_harness import isolated_airflow, run_dag_test


@pytest.fixture(scope="module")
def dev_set(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.ingest.world import world_manifest_rows
    from pipelines.train.devset import training_set_from_rows

    out = tmp_path_factory.mktemp("ts") / "ts"
    return training_set_from_rows(world_manifest_rows(small_world), small_world, out, seed=0)


@pytest.mark.slow  # db migrate + 3 one-epoch trainings + MLflow logging: a few minutes on 2 cores
def test_retrain_promotes_then_rejects(dev_set: Path, tmp_path: Path) -> None:
    root = tmp_path / "proj"
    env = isolated_airflow(tmp_path, root)
    models = ["parser", "tagger", "embedder"]
    conf = {"models": models, "profile": "demo", "epochs": 1, "training_set": str(dev_set),
            "thresholds": {"parser": {"miou": 0.0, "pixel_acc": 0.0}, "tagger": {"acc_min": 0.0},
                           "embedder": {"recall_at_5": 0.0}}}
    res = run_dag_test(env, "retrain_models", conf, tmp_path)
    assert res["state"].endswith("success"), res
    for step in ("train", "evaluate", "gate"):
        assert [k for k in res["tis"] if k.startswith(step + "[")] == [f"{step}[{i}]" for i in range(3)], res["tis"]
    assert any(e["uri"].rstrip("/") == "tailor://champions" for e in res["events"]), res["events"]

    from mlflow import MlflowClient

    from pipelines.settings import Settings

    s = Settings(root=root, data_dir=root / "data", var_dir=root / "var", mlflow_dir=root / "mlflow")
    client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
    for m in models:
        mv = client.get_model_version_by_alias(f"tailor-{m}", "champion")
        assert mv.tags["gate.decision"] == "promoted" and json.loads(mv.tags["gate.reasons"])
        assert mv.tags["data.snapshot"]

    # Same inputs, impossible thresholds: the retried chain resumes (no retraining), the
    # gate rejects, nothing is promoted, and no `champions` event is emitted.
    conf["thresholds"] = {m: {k: 2.0 for k in v} or {"acc_min": 2.0} for m, v in conf["thresholds"].items()}
    before = sum(1 for e in res["events"] if e["uri"].rstrip("/") == "tailor://champions")
    res2 = run_dag_test(env, "retrain_models", conf, tmp_path)
    assert res2["state"].endswith("success"), res2
    assert res2["tis"]["publish"].endswith("skipped")
    assert sum(1 for e in res2["events"] if e["uri"].rstrip("/") == "tailor://champions") == before
    for m in models:
        assert client.get_model_version_by_alias(f"tailor-{m}", "challenger").tags["gate.decision"] == "rejected"
        assert str(client.get_model_version_by_alias(f"tailor-{m}", "champion").version) == "1"
