"""Training, evaluation and inference for the four models, as the retrain DAG calls them.

    result = train_model("tagger", training_set, out_dir, profile="demo")
    metrics = evaluate_model("tagger", result.model, training_set, split="test", out_dir=...)
    model = load_model("tagger", out_dir / "model.pt"); predict("tagger", model, [img])

``training_set`` is a directory following :mod:`pipelines.manifests`. Runs are seeded,
checkpoint every epoch (``out_dir/checkpoints/last.pt``) and resume from there when the
resolved config is the same; early stopping watches the val split's primary metric.
Heavy imports (torch, timm) happen inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRIMARY_METRIC: dict[str, str] = {
    "detector": "map_50",
    "parser": "miou",
    "tagger": "acc_gate",
    "embedder": "retrieval_gate",
}


@dataclass
class TrainResult:
    """What one training run produced (the MLflow layer logs it)."""

    name: str
    model: Any  # torch.nn.Module in eval mode, best weights
    config: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: dict[str, float]  # held-out test split
    primary_metric: str
    plots: list[Path]
    checkpoint: Path  # out_dir/model.pt
    input_example: Any
    epochs_run: int
    resumed_from: int | None
    best_epoch: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def get_task(name: str):
    """The :class:`~pipelines.train.engine.Task` of a model name."""
    from .detector import DetectorTask
    from .embedder import EmbedderTask
    from .parser import ParserTask
    from .tagger import TaggerTask

    tasks = {"detector": DetectorTask, "parser": ParserTask, "tagger": TaggerTask, "embedder": EmbedderTask}
    if name not in tasks:
        raise KeyError(f"no training task for model {name!r}; known: {sorted(tasks)}")
    return tasks[name]()


def build_model(name: str, config: dict[str, Any]):
    """``models.create`` + the resolved config attached as ``model.tailor_config`` (predict
    needs input sizes and vocabularies)."""
    import models

    model = models.create(name, config)
    model.tailor_config = dict(config)
    return model


def _frames(name: str, training_set: Path, cfg: dict[str, Any]):
    from pipelines.manifests import load_manifest

    df = load_manifest(Path(training_set), name)
    if not cfg.get("include_real", True) and "source" in df:
        df = df[df["source"] != "photos"].reset_index(drop=True)
    return df


def train_model(
    name: str,
    training_set: Path,
    out_dir: Path,
    profile: str = "demo",
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    evaluate: bool = True,
) -> TrainResult:
    """Train ``name`` on the training set's train split; see the module docstring.

    Writes ``out_dir/model.pt`` (best weights + config), ``history.json``, ``config.json``,
    ``metrics.json`` and ``plots/*.png``; returns a :class:`TrainResult` with the test-split
    metrics of the best weights. ``evaluate=False`` stops after training (metrics empty):
    the DAG's train task does that and leaves the held-out evaluation to its evaluate task.
    A finished ``out_dir`` is not trained again: the best weights are reloaded.
    """
    import time

    import torch

    from pipelines.plots import curves_png

    from .config import config_hash, resolve_config
    from .engine import fit, seed_everything

    t0 = time.perf_counter()
    task = get_task(name)
    cfg = resolve_config(name, profile, overrides)
    torch.set_num_threads(int(cfg.get("threads") or 2))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = _frames(name, training_set, cfg)
    cfg = task.prepare(cfg, df)
    from pipelines.manifests import read_training_set

    cfg["training_set"] = read_training_set(Path(training_set)).get("id")
    digest = config_hash(cfg)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    seed_everything(int(cfg["seed"]))
    model = build_model(name, cfg)
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    val_df = df[df["split"] == "val"].reset_index(drop=True)
    if not len(val_df):  # no val rows: early stopping watches the train split (noted in config)
        val_df = train_df
        cfg["val_fallback"] = "train"
    run = fit(task, model, train_df, val_df, cfg, out_dir, digest, progress=progress)
    model = load_model(name, out_dir / "model.pt")
    plots_dir = out_dir / "plots"
    metrics: dict[str, float] = {}
    plots: list[Path] = []
    test_df = df[df["split"] == "test"].reset_index(drop=True)
    if evaluate:
        metrics, plots = task.evaluate(model, test_df, cfg, plots_dir)
    else:
        task.warm(model, test_df, cfg)
    plots.append(curves_png(run["history"], plots_dir / "curves.png"))
    (out_dir / "history.json").write_text(json.dumps(run["history"], indent=2))
    if evaluate:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    key, _ = task.primary_value(metrics)
    return TrainResult(
        name=name,
        model=model,
        config=cfg,
        history=run["history"],
        metrics=metrics,
        primary_metric=key,
        plots=plots,
        checkpoint=out_dir / "model.pt",
        input_example=task.input_example(cfg),
        epochs_run=run["epochs_run"],
        resumed_from=run["resumed_from"],
        best_epoch=run["best_epoch"],
        seconds=round(time.perf_counter() - t0, 1),
    )


def evaluate_model(
    name: str, model, training_set: Path, split: str = "test", out_dir: Path | None = None
) -> dict[str, float]:
    """Metrics of ``model`` on one split of a training set; plots go to ``out_dir/plots``."""
    task = get_task(name)
    cfg = dict(model.tailor_config)
    cfg.pop("eval_limit", None)
    df = _frames(name, training_set, cfg)
    df = df[df["split"] == split].reset_index(drop=True)
    metrics, _ = task.evaluate(model, df, cfg, Path(out_dir) / "plots" if out_dir is not None else None)
    return metrics


def load_model(name: str, model_pt: Path, expected_sha256: str | None = None):
    """Rebuild a model from the config stored in ``model.pt`` and load its weights (eval mode;
    weights only, see :mod:`models.checkpoint`)."""
    from models import checkpoint

    return checkpoint.load(Path(model_pt), name, expected_sha256)


def model_config(name: str, profile: str = "demo") -> dict[str, Any]:
    """The training profile's config for ``name`` with the task's vocabularies filled in
    (what :func:`build_model` needs for an untrained model: tests, dev bundles)."""
    import pandas as pd

    from .config import resolve_config

    cfg = resolve_config(name, profile)
    # prepare() derives vocabularies from the training frame; an empty frame with the
    # columns it reads gives the taxonomy's own vocabularies.
    frame = pd.DataFrame({"boxes": pd.Series([], dtype=object), "label": pd.Series([], dtype=object)})
    return get_task(name).prepare(cfg, frame) or cfg


def predict(name: str, model, images: list[Any]) -> Any:
    """Inference on PIL images: detector -> ``[{boxes (xyxy), scores, categories}]``;
    parser -> ``[label map (H, W) uint8]``; tagger -> ``[{head: (value, score)}]``;
    embedder -> ``np.ndarray (N, D)`` L2-normalised."""
    return get_task(name).predict(model, images)


__all__ = [
    "PRIMARY_METRIC",
    "TrainResult",
    "build_model",
    "evaluate_model",
    "load_model",
    "predict",
    "train_model",
]
