"""The retrain stages: plan -> train -> evaluate (+ log and register) -> gate -> publish,
one chain per model. The ``retrain_models`` DAG runs one task per stage (mapped over the
plan's specs) and ``tailor models train`` chains the same functions in one process.

Each stage takes and returns small JSON-able dicts of paths and ids, so the Airflow DAG
passes only those through XCom. The training work directory is derived from the training
set, model, profile and overrides, so a retried or re-run task resumes from its last
checkpoint instead of starting over, and the same inputs give the same output.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from models import MODEL_NAMES as MODELS
from pipelines.settings import Settings, get_settings


def work_dir(model: str, training_set: Path, profile: str, overrides: dict | None, s: Settings | None = None) -> Path:
    """Deterministic training directory: same inputs -> same directory -> resume, not redo."""
    s = s or get_settings()
    from pipelines.manifests import read_training_set

    ts_id = read_training_set(training_set).get("id") or Path(training_set).name
    key = hashlib.sha256(json.dumps(overrides or {}, sort_keys=True).encode()).hexdigest()[:8]
    return s.runs_dir / str(ts_id) / model / f"{profile}-{key}"


def plan_stage(
    models: list[str] | None,
    training_set: str | None,
    profile: str = "demo",
    epochs: int | None = None,
    thresholds: dict | None = None,
) -> list[dict[str, Any]]:
    """One spec per model to retrain; validates names and resolves the training set."""
    chosen = list(models or MODELS)
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    from pipelines.validate.training_set import latest_training_set

    ts = Path(training_set) if training_set else latest_training_set()
    epochs = epochs or get_settings().train_epochs
    overrides = {"epochs": int(epochs)} if epochs else {}
    return [
        {
            "model": m,
            "training_set": str(ts),
            "profile": profile,
            "overrides": overrides,
            "thresholds": (thresholds or {}).get(m, {}),
        }
        for m in chosen
    ]


def train_stage(spec: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one model; returns the spec plus ``run_dir``."""
    from pipelines.train import train_model

    ts = Path(spec["training_set"])
    out = work_dir(spec["model"], ts, spec["profile"], spec["overrides"])
    # Evaluation on the held-out split is the evaluate task's job, not done twice.
    result = train_model(
        spec["model"], ts, out, profile=spec["profile"], overrides=spec["overrides"], progress=progress, evaluate=False
    )
    return {**spec, "run_dir": str(out), "epochs_run": result.epochs_run, "resumed_from": result.resumed_from}


def evaluate_stage(info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the trained model on the held-out test split, log the run and register a version."""
    from pipelines import registry
    from pipelines.manifests import read_training_set
    from pipelines.train import train_model

    ts = Path(info["training_set"])
    # train_model on a finished run directory does not train again: it reloads the best
    # weights, and here evaluates them on the held-out test split.
    result = train_model(
        info["model"], ts, Path(info["run_dir"]), profile=info["profile"], overrides=info["overrides"], progress=False
    )
    # A dev training set (no crawl behind it) records no snapshot: say so rather than "None".
    snapshot = str(read_training_set(ts).get("snapshot_id") or "none (dev training set)")
    logged = registry.log_training_run(info["model"], result, ts, snapshot, extra_params={"profile": info["profile"]})
    return {**info, **logged, "metrics": result.metrics, "primary_metric": result.primary_metric, "snapshot": snapshot}


def gate_stage(info: dict[str, Any]) -> dict[str, Any]:
    """Apply the promotion gate to the registered version; returns the decision record."""
    from pipelines import registry
    from pipelines.gate import GateConfig
    from pipelines.manifests import read_training_set

    ts = Path(info["training_set"])
    cfg = GateConfig.load(info["profile"], overrides={info["model"]: info.get("thresholds") or {}})

    def evaluate_champion(model_uri: str) -> dict[str, float]:
        from pipelines.train import evaluate_model

        # weights only, checked against the hash recorded when the champion was registered
        return evaluate_model(info["model"], registry.load_version(model_uri), ts, split="test")

    decision = registry.gate(
        info["model"],
        info["version"],
        info["metrics"],
        str(read_training_set(ts).get("id", ts.name)),
        cfg,
        evaluate_champion,
    )
    return {**decision.to_dict(), "run_id": info["run_id"], "metrics": info["metrics"]}


def summarize(decisions: list[dict[str, Any]]) -> str:
    """Human-readable lines for the DAG log: one per model with its decision and reasons."""
    lines = []
    for d in decisions:
        lines.append(f"{d['model']} v{d['version']}: {d['decision'].upper()}")
        lines.extend(f"    - {r}" for r in d["reasons"])
    return "\n".join(lines)


def publish_stage(decisions: list[dict[str, Any]]) -> list[str]:
    """Print every gate decision and return the promoted versions (``model:vN``); an empty
    list means no champion changed, and the index and deploy stages have nothing new to do."""
    print(summarize(list(decisions)))
    return [f"{d['model']}:v{d['version']}" for d in decisions if d["promoted"]]
