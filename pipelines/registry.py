"""MLflow tracking and the model registry; the promotion gate's rules are in :mod:`pipelines.gate`.

Names: experiment ``tailor-<model>``, registered model ``tailor-<model>``, aliases
``@champion`` (what serving loads) and ``@challenger`` (the latest rejected candidate).

The gate promotes a candidate only if (a) every threshold of the gate config holds,
(b) every gated metric ``m`` beats ``baseline_m`` -- what a model that learned nothing
scores on the same evaluation rows, reported by :mod:`pipelines.train` beside ``m`` -- by
the configured margin (a missing baseline fails: nothing shows the model beat chance), and
(c) it does not regress the current champion by more than the tolerance *on the same
evaluation set*: when the champion was evaluated on another set, the caller's
``evaluate_champion`` callback re-scores it on the candidate's set first. The decision and
its reasons are stored as model-version tags ``gate.decision`` / ``gate.reasons`` (and the
baseline comparison as ``gate.baselines``) before the alias moves; the alias move is one registry write, so a reader resolving
``@champion`` sees either the old or the new version, never a mixture. Promotions are
appended to the registered model's ``champion.history`` tag; rollback moves the alias back
along it. Nothing is ever deleted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models import MODEL_NAMES
from pipelines.gate import GateConfig, GateDecision, baseline_checks, baseline_table, decide
from pipelines.settings import Settings, get_settings

CHAMPION = "champion"
#: Where a run keeps the weights-only model file, and the version tag with its sha256.
WEIGHTS_DIR = "weights"
WEIGHTS_TAG = "weights.sha256"
CHALLENGER = "challenger"


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
    if str(s.mlflow_tracking_uri).startswith(("http://", "https://")):
        # Through a tracking server (the cluster profile): the server decides where artifacts
        # go (its --artifacts-destination, object storage) and proxies them.
        return client.create_experiment(name)
    location = (Path(s.mlflow_artifacts_dir) / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


# --------------------------------------------------------------------------- gate config
def baseline_markdown(model: str, rows: list[dict[str, Any]]) -> str:
    """The baseline table as Markdown (logged as ``baselines/table.md``)."""

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"# {registered_name(model)}: test metrics vs trivial baselines",
        "",
        "| metric | value | baseline | baseline model | margin over baseline |",
        "|---|---:|---:|---|---:|",
    ]
    lines += [f"| {r['metric']} | {f(r['value'])} | {f(r['baseline'])} | {r['kind']} | {f(r['over'])} |" for r in rows]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- logging


def log_training_run(
    model: str,
    result: Any,
    training_set: Path,
    snapshot_id: str,
    extra_params: Mapping[str, Any] | None = None,
    s: Settings | None = None,
) -> dict[str, str]:
    """Log one finished training run and register its model as a new version.

    ``result`` is a ``pipelines.train.TrainResult``. Logs the resolved config, the snapshot
    id and the training manifest as an MLflow dataset, per-epoch curves, final metrics,
    plots and class histograms, and the model twice:

    - ``weights/model.pt``: weights and config, the only form Tailor loads
      (:func:`load_version`, weights only, :mod:`models.checkpoint`); its sha256 becomes the
      version's ``weights.sha256`` tag, kept in the tracking store, not beside the file;
    - the MLflow pytorch flavour (pickle: detectors are not ``torch.export``-able) with a
      signature and input example, for lineage and the UI. Tailor never loads it.

    Returns ``{"run_id", "version", "model_uri"}``.
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    from models import checkpoint
    from pipelines.manifests import read_training_set

    s = s or get_settings()
    client = _client(s)
    exp_id = ensure_experiment(model, s)
    ts_meta = read_training_set(training_set)
    manifest_path = Path(training_set) / "manifests" / f"{model}.parquet"
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{model}-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tags(
            {
                "model": model,
                "data.snapshot": snapshot_id,
                "training_set": ts_meta.get("id", ""),
                "resumed_from": str(getattr(result, "resumed_from", None)),
            }
        )
        flat = _flatten({**result.config, **(extra_params or {})})
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        mlflow.log_dict(result.config, "config/resolved.json")
        if manifest_path.exists():
            df = pd.read_parquet(manifest_path)
            dataset = mlflow.data.from_pandas(df, source=str(manifest_path), name=f"{ts_meta.get('id', 'ts')}/{model}")
            mlflow.log_input(dataset, context="training")
            mlflow.log_artifact(str(manifest_path), "manifest")
        for epoch, row in enumerate(result.history):
            mlflow.log_metrics(
                {k: float(v) for k, v in row.items() if _is_number(v) and k != "epoch"},
                step=int(row.get("epoch", epoch)),
            )
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in result.metrics.items() if _is_number(v)})
        _log_baselines(model, result.metrics)
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
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / checkpoint.FILE
            weights_sha = checkpoint.save(result.model, model, result.config, weights)
            mlflow.log_artifact(str(weights), WEIGHTS_DIR)
        info = mlflow.pytorch.log_model(
            result.model,
            name="model",
            serialization_format="pickle",
            signature=signature,
            input_example=example if isinstance(example, np.ndarray) else None,
            registered_model_name=registered_name(model),
            await_registration_for=60,
        )
        version = str(info.registered_model_version)
    client.set_model_version_tag(registered_name(model), version, WEIGHTS_TAG, weights_sha)
    client.set_model_version_tag(registered_name(model), version, "data.snapshot", snapshot_id)
    client.set_model_version_tag(registered_name(model), version, "eval.set", ts_meta.get("id", ""))
    client.set_model_version_tag(
        registered_name(model), version, "eval.metrics", json.dumps(result.metrics, sort_keys=True)
    )
    return {"run_id": run.info.run_id, "version": version, "model_uri": f"models:/{registered_name(model)}/{version}"}


def resolve_version(model_uri: str, s: Settings | None = None) -> Any:
    """The MLflow ``ModelVersion`` of ``models:/tailor-<model>/<n>`` or ``models:/tailor-<model>@<alias>``."""
    import re

    m = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))", model_uri)
    if m is None:
        raise ValueError(f"{model_uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    client = _client(s)
    name, number, alias = m.groups()
    return client.get_model_version(name, number) if number else client.get_model_version_by_alias(name, alias)


def fetch_weights(model_uri: str, dst: Path, s: Settings | None = None) -> tuple[Path, str, Any]:
    """Download a registered version's ``weights/model.pt`` into ``dst`` and check it against
    the ``weights.sha256`` recorded at registration; returns ``(path, sha256, ModelVersion)``.

    Raises :class:`models.checkpoint.UntrustedModel` when the bytes differ (the artifact
    store was written to after registration) or the version has no recorded hash.
    """
    import mlflow

    from models import checkpoint

    s = s or get_settings()
    mv = resolve_version(model_uri, s)
    want = (mv.tags or {}).get(WEIGHTS_TAG)
    if not want:
        raise checkpoint.UntrustedModel(
            f"{mv.name} v{mv.version} has no {WEIGHTS_TAG} tag (registered before "
            "weights-only loading): retrain or re-register it"
        )
    import shutil

    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst) as tmp:
        got_file = Path(
            mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path=f"{WEIGHTS_DIR}/{checkpoint.FILE}", dst_path=tmp
            )
        )
        local = dst / checkpoint.FILE
        shutil.move(str(got_file), local)
    got = checkpoint.sha256(local)
    if got != want:
        local.unlink(missing_ok=True)
        raise checkpoint.UntrustedModel(
            f"{mv.name} v{mv.version}: weights sha256 {got[:16]}... is not the recorded "
            f"{want[:16]}...; the artifact was replaced after registration: refusing it"
        )
    return local, want, mv


def load_version(model_uri: str, s: Settings | None = None) -> Any:
    """A registered model, weights only, checked against its recorded hash (eval mode)."""
    from models import checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path, sha, mv = fetch_weights(model_uri, Path(tmp), s)
        return checkpoint.load(path, mv.name.removeprefix("tailor-"), sha)


def _log_baselines(model: str, metrics: Mapping[str, Any]) -> None:
    """Artifacts ``baselines/table.{md,json}`` and ``baselines/metrics_vs_baselines.png``:
    each test metric that has a trivial baseline beside it (the ``baseline_*`` values are
    also logged as ``test_baseline_*`` metrics with the others)."""
    import mlflow

    from pipelines.plots import baselines_png

    rows = baseline_table(model, metrics)
    if not rows:
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "table.md").write_text(baseline_markdown(model, rows))
        (d / "table.json").write_text(json.dumps(rows, indent=2))
        baselines_png(
            rows, d / "metrics_vs_baselines.png", f"{registered_name(model)}: test metric vs trivial baseline"
        )
        mlflow.log_artifacts(str(d), "baselines")


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


def gate(
    model: str,
    version: str,
    metrics: Mapping[str, float],
    eval_set: str,
    config: GateConfig,
    evaluate_champion: Callable[[str], Mapping[str, float]] | None = None,
    s: Settings | None = None,
) -> GateDecision:
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
            from models.checkpoint import UntrustedModel

            try:
                champ_metrics = dict(evaluate_champion(f"models:/{name}/{current.version}"))
                notes.append(f"champion v{current.version} re-evaluated on {eval_set}")
            except UntrustedModel as exc:
                # a champion whose weights cannot be loaded safely (no recorded hash, or a
                # changed artifact) is not run; it is compared on its recorded figures
                champ_metrics = json.loads(current.tags.get("eval.metrics", "{}"))
                notes.append(
                    f"champion v{current.version} not re-evaluated ({exc}); compared on its recorded "
                    f"evaluation set {current.tags.get('eval.set', '?')}"
                )
        else:
            champ_metrics = json.loads(current.tags.get("eval.metrics", "{}"))
            notes.append(
                f"champion v{current.version} compared on its own evaluation set {current.tags.get('eval.set')!r}"
            )
    thresholds, margins = config.thresholds.get(model, {}), config.margins(model)
    ok, reasons = decide(model, metrics, thresholds, config.tolerance, champ_metrics, margins)
    decision = GateDecision(
        model=model,
        version=str(version),
        promoted=ok,
        reasons=notes + reasons,
        previous_champion=str(current.version) if current else None,
        champion_metrics=champ_metrics or {},
        baselines=baseline_checks(model, metrics, thresholds, margins),
    )
    # Tags first, alias last: a reader never sees a champion without its decision record.
    client.set_model_version_tag(name, version, "gate.decision", decision.decision)
    client.set_model_version_tag(name, version, "gate.reasons", json.dumps(decision.reasons))
    client.set_model_version_tag(name, version, "gate.baselines", json.dumps(decision.baselines))
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
    client.set_model_version_tag(
        name, str(current.version), "gate.rolled_back", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    client.set_registered_model_tag(name, "champion.history", json.dumps(history[:-1]))
    client.set_registered_model_alias(name, CHAMPION, previous)
    return previous


def status(models: tuple[str, ...] = MODEL_NAMES, s: Settings | None = None) -> list[dict[str, Any]]:
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
