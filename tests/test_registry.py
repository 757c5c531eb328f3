"""Promotion gate, registration and rollback against a real MLflow sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines import gate, registry
from pipelines.settings import Settings
from tests.helpers.registry import FakeTrainResult, gate_metrics, hostile_pickle

CFG = gate.GateConfig(thresholds={"tagger": {"acc_min": 0.5}}, tolerance=0.02)


def _register(mlflow_store, tiny_training_set, acc: float, snapshot: str = "snap-1") -> str:
    torch.manual_seed(0)
    res = FakeTrainResult(model=torch.nn.Linear(4, 2), metrics=gate_metrics(acc))
    return registry.log_training_run("tagger", res, tiny_training_set, snapshot, s=mlflow_store)["version"]


def test_decide_rule() -> None:
    # candidates carry their trivial baseline (0.5); baselines are checked in test_gate_baselines
    ok, reasons = gate.decide("m", {"a": 0.9, "baseline_a": 0.5}, {"a": 0.8}, 0.02, None)
    assert ok and "no current champion" in reasons
    ok, reasons = gate.decide("m", {"a": 0.7, "baseline_a": 0.5}, {"a": 0.8}, 0.02, None)
    assert not ok and any("< threshold" in r for r in reasons)
    ok, reasons = gate.decide("m", {"a": 0.85, "baseline_a": 0.5}, {"a": 0.8}, 0.02, {"a": 0.9})
    assert not ok and any("regresses champion" in r for r in reasons)
    ok, _ = gate.decide("m", {"a": 0.89, "baseline_a": 0.5}, {"a": 0.8}, 0.02, {"a": 0.9})
    assert ok  # within tolerance
    ok, reasons = gate.decide("m", {}, {"a": 0.8}, 0.02, None)
    assert not ok and "a missing" in reasons[0]


def test_accept_reject_rollback(mlflow_store: Settings, tiny_training_set: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store.mlflow_tracking_uri, registry_uri=mlflow_store.mlflow_tracking_uri)
    name = "tailor-tagger"

    v1 = _register(mlflow_store, tiny_training_set, 0.6)
    d1 = registry.gate("tagger", v1, gate_metrics(0.6), "ts-1", CFG, s=mlflow_store)
    assert d1.promoted and str(client.get_model_version_by_alias(name, "champion").version) == v1
    mv = client.get_model_version(name, v1)
    assert mv.tags["gate.decision"] == "promoted" and mv.tags["data.snapshot"] == "snap-1"
    assert "acc_min=0.6000 >= threshold 0.5000" in json.loads(mv.tags["gate.reasons"])
    assert "acc_min=0.6000 beats the majority-class baseline 0.2500 by 0.3500 (margin 0.10)" in d1.reasons
    assert json.loads(mv.tags["gate.baselines"]) == [
        {
            "metric": "acc_min",
            "kind": "majority-class",
            "value": 0.6,
            "baseline": 0.25,
            "over": pytest.approx(0.35),
            "margin": 0.1,
            "passed": True,
        }
    ]
    # the baseline table is logged with the version, its baselines as metrics too
    run = client.get_run(mv.run_id)
    assert run.data.metrics["test_baseline_acc_min"] == 0.25
    logged = {Path(a.path).name for a in client.list_artifacts(mv.run_id, "baselines")}
    assert logged == {"table.md", "table.json", "metrics_vs_baselines.png"}
    table = json.loads(Path(client.download_artifacts(mv.run_id, "baselines/table.json")).read_text())
    assert table == [
        {"metric": "acc_min", "kind": "majority-class", "value": 0.6, "baseline": 0.25, "over": pytest.approx(0.35)}
    ]

    # Below threshold: rejected, labelled challenger, kept.
    v2 = _register(mlflow_store, tiny_training_set, 0.4)
    d2 = registry.gate("tagger", v2, gate_metrics(0.4), "ts-1", CFG, s=mlflow_store)
    assert not d2.promoted
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1
    assert str(client.get_model_version_by_alias(name, "challenger").version) == v2
    assert client.get_model_version(name, v2).tags["gate.decision"] == "rejected"

    # Above threshold but regresses the champion beyond tolerance on the same eval set: rejected.
    v3 = _register(mlflow_store, tiny_training_set, 0.55)
    assert not registry.gate("tagger", v3, gate_metrics(0.55), "ts-1", CFG, s=mlflow_store).promoted

    # A champion from another evaluation set is re-scored on the candidate's set.
    v4 = _register(mlflow_store, tiny_training_set, 0.7)
    seen = []
    d4 = registry.gate(
        "tagger",
        v4,
        gate_metrics(0.7),
        "ts-2",
        CFG,
        evaluate_champion=lambda uri: seen.append(uri) or {"acc_min": 0.65},
        s=mlflow_store,
    )
    assert d4.promoted and seen == [f"models:/{name}/{v1}"] and d4.champion_metrics == {"acc_min": 0.65}

    status = {r["model"]: r for r in registry.status(s=mlflow_store)}
    assert status["tagger"]["version"] == v4 and status["tagger"]["snapshot"] == "snap-1"
    assert status["detector"]["version"] is None

    assert registry.rollback("tagger", s=mlflow_store) == v1
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1
    assert "gate.rolled_back" in client.get_model_version(name, v4).tags
    assert len(client.search_model_versions(f"name='{name}'")) == 4  # nothing deleted
    with pytest.raises(RuntimeError, match="first champion"):
        registry.rollback("tagger", s=mlflow_store)


def test_logged_model_loads_back_as_module_with_signature(mlflow_store: Settings, tiny_training_set: Path) -> None:
    import mlflow.pytorch
    from mlflow.models import get_model_info

    v = _register(mlflow_store, tiny_training_set, 0.6)
    uri = f"models:/tailor-tagger/{v}"
    loaded = mlflow.pytorch.load_model(uri)
    assert isinstance(loaded, torch.nn.Linear)
    info = get_model_info(uri)
    assert info.signature is not None and info.signature.inputs is not None


def test_gate_config_profiles_and_overrides() -> None:
    full = gate.GateConfig.load("full")
    assert full.thresholds["detector"]["map_50"] == 0.85
    demo = gate.GateConfig.load("demo", overrides={"tagger": {"acc_min": 0.5}})
    assert demo.thresholds["tagger"]["acc_min"] == 0.5
    with pytest.raises(ValueError, match="no profile"):
        gate.GateConfig.load("nope")


def test_bundle_models_load_only_with_their_recorded_hash(tmp_path: Path) -> None:
    from models import checkpoint
    from models.checkpoint import load_dir, save_dir
    from pipelines.train import build_model, model_config

    model = build_model("embedder", model_config("embedder", "demo")).eval()
    d = tmp_path / "models" / "embedder"
    sha = save_dir(model, d)
    assert load_dir(d, sha) is not None
    with pytest.raises(checkpoint.UntrustedModel, match="records no weights hash"):
        load_dir(d, None)
    marker = tmp_path / "pwned"
    hostile_pickle(d / checkpoint.FILE, marker)
    with pytest.raises(checkpoint.UntrustedModel):
        load_dir(d, sha)
    assert not marker.exists()


def test_a_champion_without_a_weights_hash_is_compared_on_its_record_not_run(
    mlflow_store: Settings, tiny_training_set: Path
) -> None:
    """A champion registered before weights-only loading (no weights.sha256 tag) is never
    loaded by the gate: the challenger is compared with its recorded figures."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store.mlflow_tracking_uri, registry_uri=mlflow_store.mlflow_tracking_uri)
    v1 = _register(mlflow_store, tiny_training_set, 0.6)
    assert registry.gate("tagger", v1, gate_metrics(0.6), "ts-1", CFG, s=mlflow_store).promoted
    client.delete_model_version_tag("tailor-tagger", v1, registry.WEIGHTS_TAG)
    v2 = _register(mlflow_store, tiny_training_set, 0.7)
    d = registry.gate(
        "tagger",
        v2,
        gate_metrics(0.7),
        "ts-2",
        CFG,
        s=mlflow_store,
        evaluate_champion=lambda uri: registry.load_version(uri, s=mlflow_store) and {},
    )
    assert d.promoted
    assert any(f"champion v{v1} not re-evaluated" in n and "no weights.sha256 tag" in n for n in d.reasons), d.reasons


def test_a_champion_from_another_evaluation_set_is_really_re_scored(
    small_set: Path, tiny_training_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retrain DAG's gate stage with a champion evaluated on another set: the champion's
    registered weights are loaded (hash-checked) and evaluated on the candidate's test split
    by the real evaluation, and the decision compares against those figures."""
    from pipelines.manifests import read_training_set
    from pipelines.settings import get_settings
    from pipelines.train import build_model, evaluate_model, model_config
    from pipelines.train.stages import gate_stage

    monkeypatch.setenv("TAILOR_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        s = get_settings()
        Path(s.mlflow_dir).mkdir(parents=True)
        torch.manual_seed(0)
        champion = build_model("tagger", model_config("tagger", "demo")).eval()
        recorded = {"acc_min": 0.9, "baseline_acc_min": 0.2}  # on ts-1, a set the candidate is not scored on
        res = FakeTrainResult(
            model=champion, metrics=recorded, config=champion.tailor_config, history=[], input_example=None
        )
        v1 = registry.log_training_run("tagger", res, tiny_training_set, "snap-1", s=s)["version"]
        cfg = gate.GateConfig(thresholds={"tagger": {"acc_min": 0.5}}, tolerance=0.02)
        assert registry.gate("tagger", v1, recorded, "ts-1", cfg, s=s).promoted

        torch.manual_seed(1)
        candidate = build_model("tagger", model_config("tagger", "demo")).eval()
        cand_metrics = {"acc_min": 0.95, "baseline_acc_min": 0.2}
        res2 = FakeTrainResult(
            model=candidate, metrics=cand_metrics, config=candidate.tailor_config, history=[], input_example=None
        )
        logged = registry.log_training_run("tagger", res2, small_set, "snap-2", s=s)
        info = {
            "model": "tagger",
            "training_set": str(small_set),
            "profile": "demo",
            "metrics": cand_metrics,
            "thresholds": {"acc_min": 0.0},
            **logged,
        }
        decision = gate_stage(info)

        set_id = read_training_set(small_set)["id"]
        assert f"champion v{v1} re-evaluated on {set_id}" in decision["reasons"]
        expected = evaluate_model("tagger", registry.load_version(f"models:/tailor-tagger/{v1}", s=s), small_set)
        assert decision["champion_metrics"]["acc_min"] == pytest.approx(expected["acc_min"])
        assert decision["champion_metrics"]["acc_min"] != recorded["acc_min"]  # not the figure recorded on ts-1
    finally:
        get_settings.cache_clear()
