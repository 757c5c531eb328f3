"""CLI entry points (registered by pipelines.cli as ``tailor deploy status|rollback|run`` and
``tailor bench serve``). Only typer/pathlib/typing at import time: the CLI stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def deploy_status_command() -> None:
    """Current release, its versions, the gateway and what answers in each slot behind it."""
    from pipelines.deploy.release import status

    typer.echo(json.dumps(status(), indent=2, default=str))


def deploy_rollback_command() -> None:
    """Serve the previous release on the public port again."""
    from pipelines.deploy.release import rollback

    try:
        typer.echo(json.dumps(rollback(), indent=2))
    except RuntimeError as exc:
        typer.echo(f"rollback failed: {exc}", err=True)
        raise typer.Exit(1) from None


def deploy_command(
    bundle: Annotated[Path | None, typer.Option(help="deploy this bundle dir instead of the @champion models")] = None,
    index_dir: Annotated[
        Path | None, typer.Option(help="index dir; default: the one built for the champion embedder")
    ] = None,
    fresh_world: Annotated[
        Path | None, typer.Option(help="demo/test: untrained models + a flat index over this world")
    ] = None,
    build: Annotated[bool, typer.Option(help="bentoml build (--no-build serves the source tree)")] = True,
) -> None:
    """Build the Bento, start it in the idle slot, smoke-test it, move the public port to it."""
    from pipelines.deploy.stages import deploy

    params = {k: str(v) for k, v in {"bundle": bundle, "index_dir": index_dir, "fresh_world": fresh_world}.items() if v}
    try:
        out = deploy(params, build=build)
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({k: out.get(k) for k in ("id", "url", "versions", "previous", "bento")}, indent=2))


def bench_serve_command(
    bundle: Annotated[Path | None, typer.Option(help="bundle dir; default: the current release's")] = None,
    world: Annotated[
        Path | None, typer.Option(help="world whose shop images are the queries; default: demo world")
    ] = None,
    duration: Annotated[float, typer.Option(help="seconds of the load run at 80% of max throughput")] = 300.0,
    requests: Annotated[
        int,
        typer.Option(
            help="requests per concurrency level (half that at concurrency 1); "
            "48 gave +-10% run-to-run at concurrency 16"
        ),
    ] = 192,
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
) -> None:
    """Latency p50/p95/p99 + throughput at concurrency 1/4/16, batching on vs off, and a load run."""
    from pipelines.deploy.bench import bench_serve

    report = bench_serve(bundle=bundle, world=world, duration_s=duration, n_requests=requests, echo=typer.echo)
    if out:
        Path(out).write_text(json.dumps(report, indent=2))


def bench_load_command(
    duration: Annotated[float, typer.Option(help="seconds of mixed load")] = 600.0,
    rate: Annotated[float, typer.Option(help="requests per second (every 3rd a bad input)")] = 4.0,
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
) -> None:
    """Good photos mixed with the bad-input set on the deployed endpoint: requests, 5xx, peak RSS, p99."""
    from pipelines.deploy.loadrun import bench_load

    try:
        report = bench_load(duration_s=duration, rate=rate, echo=typer.echo)
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if out:
        Path(out).write_text(json.dumps(report, indent=2))
    if report["5xx"] or not report["rss_within_bound"]:
        raise typer.Exit(1)


def bench_photos_command(
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
) -> None:
    """Held-out real photos (in no catalog) on the deployed endpoint: category accuracy, same-category P@5."""
    from pipelines.deploy.photocheck import bench_photos

    try:
        report = bench_photos(echo=typer.echo)
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if out:
        Path(out).write_text(json.dumps(report, indent=2))


def bench_look_command(
    split: Annotated[str, typer.Option(help="val to choose look.covered_min, test to report it")] = "val",
    bundle: Annotated[Path | None, typer.Option(help="bundle directory; default: the live release's")] = None,
    training_set: Annotated[Path | None, typer.Option(help="training-set directory; default: the latest")] = None,
) -> None:
    """Complete-the-look on annotated street scenes: owned garments covered vs others missing per threshold."""
    from pipelines.deploy.lookbench import bench_look
    from pipelines.deploy.release import read_state, release_info
    from pipelines.validate.training_set import latest_training_set

    if bundle is None:
        current = read_state().get("current")
        if not current:
            typer.echo("nothing is deployed; pass --bundle", err=True)
            raise typer.Exit(1)
        bundle = Path(release_info(current)["bundle"])
    bench_look(bundle, Path(training_set or latest_training_set()), split, echo=typer.echo)
