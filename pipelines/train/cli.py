"""``tailor models status|train|rollback`` (registered by pipelines/cli.py): champions, the
retrain stages in one process, and rollback of a champion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from models import MODEL_NAMES
from pipelines.clitools import fail


def models_status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show each model's champion: version, metrics, snapshot, date."""
    from pipelines import registry

    rows = registry.status()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    for row in rows:
        if row["version"] is None:
            typer.echo(f"{row['registered']:16s} no champion")
            continue
        metrics = ", ".join(
            f"{k}={v:.3f}" for k, v in sorted(row.get("metrics", {}).items()) if isinstance(v, int | float)
        )
        typer.echo(
            f"{row['registered']:16s} v{row['version']:<4s} {row['date']}  snapshot={row['snapshot']}  {metrics}"
        )


def models_train_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="models to retrain (default: all four)")] = None,
    profile: Annotated[str, typer.Option(help="training profile: demo or full")] = "demo",
    epochs: Annotated[int | None, typer.Option(help="override the profile's epochs")] = None,
    training_set: Annotated[Path | None, typer.Option(help="training-set dir; default: the newest")] = None,
    gate: Annotated[bool, typer.Option(help="apply the promotion gate after registering")] = True,
) -> None:
    """Train -> evaluate (held-out) -> register -> gate, one model after another: the retrain_models
    DAG's stages in this process, with a progress bar. A killed run resumes from its checkpoint."""
    from pipelines.train import stages

    if profile not in ("demo", "full"):
        fail(f"unknown profile {profile!r}; choose demo or full")
    try:
        specs = stages.plan_stage(names or None, str(training_set) if training_set else None, profile, epochs)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    decisions = []
    for spec in specs:
        info = stages.evaluate_stage(stages.train_stage(spec, progress=True))
        metrics = ", ".join(f"{k}={v:.3f}" for k, v in sorted(info["metrics"].items()) if isinstance(v, int | float))
        typer.echo(f"{spec['model']}: v{info['version']} ({info['run_dir']})  {metrics}")
        if gate:
            decisions.append(stages.gate_stage(info))
    if decisions:
        promoted = stages.publish_stage(decisions)
        typer.echo(f"promoted: {', '.join(promoted) or 'none (no champion changed)'}")


def models_rollback_cmd(
    name: Annotated[str, typer.Argument(help="detector, parser, tagger or embedder")],
) -> None:
    """Move NAME's @champion alias back to the previous champion (nothing is deleted)."""
    from pipelines import registry

    if name not in MODEL_NAMES:
        fail(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    try:
        version = registry.rollback(name)
    except RuntimeError as exc:
        fail(str(exc))
    typer.echo(f"{registry.registered_name(name)}@champion -> v{version}")


def models_curves_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a training run directory (var/runs/<set>/<model>/<profile>-<key>)")],
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: RUN_DIR/plots/curves.png)")] = None,
) -> None:
    """Draw the loss and validation curves of a training run, finished or still going (a
    long full-profile run: how far it got), and print one line per epoch."""
    from pipelines.plots import curves_png
    from pipelines.train.engine import run_history

    try:
        run = run_history(run_dir)
    except FileNotFoundError as exc:
        fail(str(exc))
    png = curves_png(run["history"], out or run_dir / "plots" / "curves.png", title=str(run_dir.name))
    for h in run["history"]:
        scores = "  ".join(
            f"{k[4:]}={v:.3f}"
            for k, v in h.items()
            if k.startswith("val_") and not k.startswith("val_n_") and isinstance(v, float)
        )
        typer.echo(f"epoch {h['epoch']:3d}  loss {h['train_loss']:.4f}  {h['seconds']:7.1f}s  {scores}")
    state = "stopped early" if run["stopped"] else "still running or resumable"
    typer.echo(f"{run['epoch']} epochs done ({state}); best epoch {run['best_epoch']}; curves: {png}")
