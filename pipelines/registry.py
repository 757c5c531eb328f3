"""MLflow tracking, model registry and the promotion gate.

Names: experiment ``tailor-<model>``, registered model ``tailor-<model>``, aliases
``@champion`` (what serving loads) and ``@challenger`` (the latest rejected candidate).

The gate promotes a candidate only if (a) every threshold of the gate config holds and
(b) it does not regress the current champion by more than the tolerance *on the same
evaluation set*: when the champion was evaluated on another set, the caller's
``evaluate_champion`` callback re-scores it on the candidate's set first. The decision and
its reasons are stored as model-version tags ``gate.decision`` / ``gate.reasons`` before
the alias moves; the alias move is one registry write, so a reader resolving
``@champion`` sees either the old or the new version, never a mixture. Promotions are
appended to the registered model's ``champion.history`` tag; rollback moves the alias back
along it. Nothing is ever deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import PROJECT_ROOT, Settings, get_settings

CHAMPION = "champion"
CHALLENGER = "challenger"
GATE_CONFIG = PROJECT_ROOT / "config" / "gate.yaml"


def registered_name(model: str) -> str:
    """Registered-model (and experiment) name of one of the four models."""
    return f"tailor-{model}"


def _client(s: Settings | None = None):
    import mlflow
    from mlflow import MlflowClient

    s = s or get_settings()
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_registry_uri(s.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri)


def ensure_experiment(model: str, s: Settings | None = None) -> str:
    """Experiment id for ``model``, created with its artifacts under the settings' artifact root."""
    s = s or get_settings()
    client = _client(s)
    name = registered_name(model)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (Path(s.mlflow_artifacts_dir) / name).resolve().as_uri()  # type: ignore[arg-type]
    return client.create_experiment(name, artifact_location=location)


# --------------------------------------------------------------------------- gate config
@dataclass
class GateConfig:
    """Thresholds per model and metric (``metric: minimum``) and the no-regression tolerance."""

    thresholds: dict[str, dict[str, float]]
    tolerance: float = 0.02
    profile: str = "demo"

    @classmethod
    def load(cls, profile: str = "demo", path: Path = GATE_CONFIG,
             overrides: Mapping[str, Mapping[str, float]] | None = None) -> GateConfig:
        """Read ``config/gate.yaml`` for ``profile``; ``overrides`` replace single thresholds."""
        raw = yaml.safe_load(Path(path).read_text())
        if profile not in raw.get("profiles", {}):
            raise ValueError(f"gate config {path} has no profile {profile!r}; known: {sorted(raw.get('profiles', {}))}")
        prof = raw["profiles"][profile]
        thresholds = {m: dict(v or {}) for m, v in prof.get("thresholds", {}).items()}
        for model, metrics in (overrides or {}).items():
            thresholds.setdefault(model, {}).update({k: float(v) for k, v in metrics.items()})
        return cls(thresholds=thresholds, tolerance=float(prof.get("tolerance", raw.get("tolerance", 0.02))),
                   profile=profile)


@dataclass
class GateDecision:
    """Outcome of the gate for one candidate version."""

    model: str
    version: str
    promoted: bool
    reasons: list[str] = field(default_factory=list)
    previous_champion: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        return "promoted" if self.promoted else "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision}


def decide(model: str, candidate: Mapping[str, float], thresholds: Mapping[str, float], tolerance: float,
           champion: Mapping[str, float] | None) -> tuple[bool, list[str]]:
    """Pure gate rule: every threshold holds and no regression beyond ``tolerance``.

    All gate metrics are "higher is better". A metric named in the thresholds but missing
    from the candidate fails the gate (it was not measured, so it cannot be trusted).
    """
    reasons: list[str] = []
    ok = True
    for metric, minimum in sorted(thresholds.items()):
        value = candidate.get(metric)
        if value is None:
            ok = False
            reasons.append(f"{metric} missing (threshold {minimum:.4f})")
        elif value < minimum:
            ok = False
            reasons.append(f"{metric}={value:.4f} < threshold {minimum:.4f}")
        else:
            reasons.append(f"{metric}={value:.4f} >= threshold {minimum:.4f}")
    if champion:
        for metric in sorted(set(thresholds) & set(champion)):
            value, best = candidate.get(metric), champion[metric]
            if value is not None and value < best - tolerance:
                ok = False
                reasons.append(f"{metric}={value:.4f} regresses champion {best:.4f} by more than {tolerance:.4f}")
    else:
        reasons.append("no current champion")
    return ok, reasons


# --------------------------------------------------------------------------- logging
def log_training_run(model: str, result: Any, training_set: Path, snapshot_id: str,
                     extra_params: Mapping[str, Any] | None = None, s: Settings | None = None) -> dict[str, str]:
    """Log one finished training run and register its model as a new version.

    ``result`` is a ``pipelines.train.TrainResult``. Logs the resolved config, the snapshot
    id and the training manifest as an MLflow dataset, per-epoch curves, final metrics,
    plots and class histograms, and the model (pickle format: detectors are not
    ``torch.export``-able, and pickle loads back the project's own module class) with a
    signature and input example. Returns ``{"run_id", "version", "model_uri"}``.
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    from pipelines.manifests import read_training_set

    s = s or get_settings()
    client = _client(s)
    exp_id = ensure_experiment(model, s)
    ts_meta = read_training_set(training_set)
    manifest_path = Path(training_set) / "manifests" / f"{model}.parquet"
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{model}-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tags({"model": model, "data.snapshot": snapshot_id, "training_set": ts_meta.get("id", ""),
                         "resumed_from": str(getattr(result, "resumed_from", None))})
        flat = _flatten({**result.config, **(extra_params or {})})
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_dict(result.config, "config/resolved.json")
        if manifest_path.exists():
            df = pd.read_parquet(manifest_path)
            dataset = mlflow.data.from_pandas(df, source=str(manifest_path), name=f"{ts_meta.get('id', 'ts')}/{model}")
            mlflow.log_input(dataset, context="training")
            mlflow.log_artifact(str(manifest_path), "manifest")
        for epoch, row in enumerate(result.history):
            mlflow.log_metrics({k: float(v) for k, v in row.items() if _is_number(v) and k != "epoch"},
                               step=int(row.get("epoch", epoch)))
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.metrics.items() if _is_number(v)})
        for plot in result.plots:
            mlflow.log_artifact(str(plot), "plots")
        hist_dir = Path(training_set) / "histograms"
        if hist_dir.exists():
            for png in sorted(hist_dir.glob(f"*{model}*.png")) or sorted(hist_dir.glob("*.png")):
                mlflow.log_artifact(str(png), "histograms")
        example = result.input_example
        signature = None
        if isinstance(example, np.ndarray):
            signature = infer_signature(example, _output_example(result.model, example))
        info = mlflow.pytorch.log_model(
            result.model, name="model", serialization_format="pickle", signature=signature,
            input_example=example if isinstance(example, np.ndarray) else None,
            registered_model_name=registered_name(model), await_registration_for=60,
        )
        version = str(info.registered_model_version)
    client.set_model_version_tag(registered_name(model), version, "data.snapshot", snapshot_id)
    client.set_model_version_tag(registered_name(model), version, "eval.set", ts_meta.get("id", ""))
    client.set_model_version_tag(registered_name(model), version, "eval.metrics", json.dumps(result.metrics, sort_keys=True))
    return {"run_id": run.info.run_id, "version": version, "model_uri": f"models:/{registered_name(model)}/{version}"}


def _output_example(module: Any, example: Any) -> Any:
    """A forward pass on the example so the signature carries the output schema."""
    import numpy as np
    import torch

    with torch.no_grad():
        out = module(torch.as_tensor(example))
    if isinstance(out, torch.Tensor):
        return out.numpy()
    if isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return {k: v.numpy() for k, v in out.items()}
    return np.zeros((1,), dtype=np.float32)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------- gate
def _champion(client: Any, model: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(registered_name(model), CHAMPION)
    except MlflowException:
        return None


def _history(client: Any, model: str) -> list[str]:
    rm = client.get_registered_model(registered_name(model))
    return json.loads(rm.tags.get("champion.history", "[]"))


def gate(model: str, version: str, metrics: Mapping[str, float], eval_set: str, config: GateConfig,
         evaluate_champion: Callable[[str], Mapping[str, float]] | None = None,
         s: Settings | None = None) -> GateDecision:
    """Decide and record whether ``version`` becomes ``@champion``.

    ``evaluate_champion(model_uri) -> metrics`` re-scores the current champion on
    ``eval_set`` when its recorded evaluation set differs; without it, a champion from
    another evaluation set is compared on its recorded metrics and the reasons say so.
    """
    s = s or get_settings()
    client = _client(s)
    name = registered_name(model)
    current = _champion(client, model)
    champ_metrics: dict[str, float] | None = None
    notes: list[str] = []
    if current is not None and str(current.version) != str(version):
        if current.tags.get("eval.set") == eval_set:
            champ_metrics = json.loads(current.tags.get("eval.metrics", "{}"))
        elif evaluate_champion is not None:
            champ_metrics = dict(evaluate_champion(f"models:/{name}/{current.version}"))
            notes.append(f"champion v{current.version} re-evaluated on {eval_set}")
        else:
            champ_metrics = json.loads(current.tags.get("eval.metrics", "{}"))
            notes.append(f"champion v{current.version} compared on its own evaluation set "
                         f"{current.tags.get('eval.set')!r}")
    ok, reasons = decide(model, metrics, config.thresholds.get(model, {}), config.tolerance, champ_metrics)
    decision = GateDecision(model=model, version=str(version), promoted=ok, reasons=notes + reasons,
                            previous_champion=str(current.version) if current else None,
                            champion_metrics=champ_metrics or {})
    # Tags first, alias last: a reader never sees a champion without its decision record.
    client.set_model_version_tag(name, version, "gate.decision", decision.decision)
    client.set_model_version_tag(name, version, "gate.reasons", json.dumps(decision.reasons))
    client.set_model_version_tag(name, version, "gate.profile", config.profile)
    client.set_model_version_tag(name, version, "gate.time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if ok:
        history = _history(client, model)
        client.set_registered_model_tag(name, "champion.history", json.dumps([*history, str(version)]))
        client.set_registered_model_alias(name, CHAMPION, str(version))
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    return decision


def rollback(model: str, s: Settings | None = None) -> str:
    """Move ``@champion`` back to the previous champion; returns the version now serving.

    The rolled-back version keeps its tags (``gate.rolled_back`` is added) and is never deleted.
    """
    s = s or get_settings()
    client = _client(s)
    name = registered_name(model)
    history = _history(client, model)
    current = _champion(client, model)
    if current is None:
        raise RuntimeError(f"{name} has no champion to roll back")
    if len(history) < 2:
        raise RuntimeError(f"{name} v{current.version} is the first champion; there is nothing to roll back to")
    previous = history[-2]
    client.set_model_version_tag(name, str(current.version), "gate.rolled_back",
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    client.set_registered_model_tag(name, "champion.history", json.dumps(history[:-1]))
    client.set_registered_model_alias(name, CHAMPION, previous)
    return previous


def status(models: tuple[str, ...] = ("detector", "parser", "tagger", "embedder"),
           s: Settings | None = None) -> list[dict[str, Any]]:
    """Each model's champion: version, metrics, snapshot, date (``None`` fields when there is none)."""
    from mlflow.exceptions import MlflowException

    s = s or get_settings()
    client = _client(s)
    rows = []
    for model in models:
        row: dict[str, Any] = {"model": model, "registered": registered_name(model), "version": None}
        try:
            client.get_registered_model(registered_name(model))
        except MlflowException:
            rows.append(row)
            continue
        champ = _champion(client, model)
        if champ is not None:
            row.update(
                version=str(champ.version),
                metrics=json.loads(champ.tags.get("eval.metrics", "{}")),
                snapshot=champ.tags.get("data.snapshot"),
                date=time.strftime("%Y-%m-%d %H:%M", time.gmtime(champ.creation_timestamp / 1000)),
                decision=champ.tags.get("gate.decision"),
                run_id=champ.run_id,
            )
        rows.append(row)
    return rows
