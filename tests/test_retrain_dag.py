"""retrain_models end to end with dag.test(): mapped train -> evaluate -> gate per model,
real MLflow sqlite registry, Asset `champions` only when a champion changed.

The gate runs with the shipped demo thresholds and the baseline rule (config/gate.yaml):
nothing here lowers them, so a promotion is a model that really cleared the gate.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipelines.assets import CHAMPIONS
from tests.airflow_harness import events_of, isolated_airflow, run_dag_test


@pytest.fixture(scope="module")
def dev_set(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small world, plus real photos where ../shared has them: the tagger's and the
    embedder's gated ``*_real`` metrics exist only on photos (without them those two are
    rejected as "missing")."""
    from pipelines.ingest.world import world_manifest_rows
    from pipelines.settings import PROJECT_ROOT
    from pipelines.train.devset import merge_rows, rebase_rows, training_set_from_rows

    rows = world_manifest_rows(small_world)
    photos_dir = PROJECT_ROOT.parent / "shared" / "datasets" / "clothing-photos"
    if (photos_dir / "labels.csv").exists():
        from pipelines.ingest.photos import photo_manifest_rows

        photos = photo_manifest_rows(photos_dir, limit=300, skip_non_garment=True)
        rows = merge_rows(rows, rebase_rows(photos, photos_dir, small_world))
    out = tmp_path_factory.mktemp("ts") / "ts"
    return training_set_from_rows(rows, small_world, out, seed=0)


#: a reason line of a measured failure (not "missing"): the metric was scored and fell short
REAL_FAILURE = ("< threshold", "does not beat the", "regresses champion")


@pytest.mark.slow  # db migrate + 4 one-epoch trainings + MLflow logging: several minutes on 2 cores
def test_retrain_promotes_then_rejects(dev_set: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from pipelines import gate
    from pipelines.settings import Settings

    root = tmp_path / "proj"
    env = isolated_airflow(tmp_path, root)
    models = ["detector", "parser", "tagger", "embedder"]
    # DAG path parameters must lie under the project's data or var root (pipelines.params)
    ts = root / "data" / "training-sets" / "dev"
    shutil.copytree(dev_set, ts)
    meta = json.loads((ts / "training_set.json").read_text())  # its images stay where they are
    meta["data_root"] = str((dev_set / meta["data_root"]).resolve())
    (ts / "training_set.json").write_text(json.dumps(meta))
    conf = {"models": models, "profile": "demo", "epochs": 1, "training_set": str(ts)}  # shipped thresholds
    res = run_dag_test(env, "retrain_models", conf, tmp_path)
    assert res["state"].endswith("success"), res
    for step in ("train", "evaluate", "gate"):
        assert [k for k in res["tis"] if k.startswith(step + "[")] == [f"{step}[{i}]" for i in range(4)], res["tis"]

    s = Settings(root=root, data_dir=root / "data", var_dir=root / "var", mlflow_dir=root / "mlflow")
    client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
    gate_cfg = gate.GateConfig.load("demo")
    decisions = {}
    for m in models:
        mv = client.get_model_version(f"tailor-{m}", "1")
        metrics = json.loads(mv.tags["eval.metrics"])
        reasons = json.loads(mv.tags["gate.reasons"])
        # the recorded decision is the shipped gate's, baselines included, on the recorded metrics
        ok, expected = gate.decide(m, metrics, gate_cfg.thresholds[m], gate_cfg.tolerance, None, gate_cfg.margins(m))
        assert (mv.tags["gate.decision"] == "promoted") == ok and reasons == expected, (m, reasons)
        assert [r["metric"] for r in json.loads(mv.tags["gate.baselines"])] == sorted(gate_cfg.thresholds[m])
        assert {a.path for a in client.list_artifacts(mv.run_id, "baselines")} >= {
            "baselines/table.json",
            "baselines/table.md",
        }
        assert mv.tags["data.snapshot"]
        decisions[m] = (ok, reasons)
    print({m: d for m, d in decisions.items()})
    promoted = [m for m, (ok, _) in decisions.items() if ok]
    rejected = [
        m
        for m, (ok, reasons) in decisions.items()
        if not ok and any(any(f in r for f in REAL_FAILURE) for r in reasons)
    ]
    # One epoch on this small set leaves models short of the demo targets, for a measured
    # reason (a threshold or the baseline), never a missing metric. Which models, if any, clear
    # the gate depends on model quality (issue 12): whatever the rule decided is what the
    # registry shows, and a `champions` event exists exactly when something was promoted.
    assert rejected, decisions
    for m in promoted:
        assert str(client.get_model_version_by_alias(f"tailor-{m}", "champion").version) == "1"
    assert bool(events_of(res, CHAMPIONS)) == bool(promoted), res["events"]

    # Same inputs, impossible thresholds: the retried chain resumes (no retraining), the
    # gate rejects, nothing is promoted, and no `champions` event is emitted.
    conf["thresholds"] = {m: {k: 2.0 for k in gate_cfg.thresholds[m]} for m in models}
    before = len(events_of(res, CHAMPIONS))
    res2 = run_dag_test(env, "retrain_models", conf, tmp_path)
    assert res2["state"].endswith("success"), res2
    assert res2["tis"]["publish"].endswith("skipped")
    assert len(events_of(res2, CHAMPIONS)) == before
    for m in models:
        assert client.get_model_version_by_alias(f"tailor-{m}", "challenger").tags["gate.decision"] == "rejected"
    for m in promoted:
        assert str(client.get_model_version_by_alias(f"tailor-{m}", "champion").version) == "1"


@pytest.mark.slow  # db migrate + one one-epoch embedder training: about two minutes on 2 cores
def test_an_asset_triggered_run_trains_on_the_latest_training_set(dev_set: Path, tmp_path: Path) -> None:
    """No ``training_set`` in the conf (what a run set off by the ``training-set`` Asset gets):
    the plan resolves the newest set by its recorded creation time, not the alphabetically
    last folder, and the registered run says which set it trained on."""
    from mlflow import MlflowClient

    from pipelines.settings import Settings

    root = tmp_path / "proj"
    env = isolated_airflow(tmp_path, root)
    for name, created in (("zz-older", "2026-01-01T00:00:00+00:00"), ("aa-newer", "2026-06-01T00:00:00+00:00")):
        ts = root / "data" / "training-sets" / name
        shutil.copytree(dev_set, ts)
        meta = json.loads((ts / "training_set.json").read_text())
        meta.update(id=name, created_at=created, data_root=str((dev_set / meta["data_root"]).resolve()))
        (ts / "training_set.json").write_text(json.dumps(meta))
    res = run_dag_test(env, "retrain_models", {"models": ["embedder"], "profile": "demo", "epochs": 1}, tmp_path)
    assert res["state"].endswith("success"), res["log"][-4000:]
    s = Settings(root=root, data_dir=root / "data", var_dir=root / "var", mlflow_dir=root / "mlflow")
    client = MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)
    run_id = client.get_model_version("tailor-embedder", "1").run_id
    assert client.get_run(run_id).data.tags["training_set"] == "aa-newer"
