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
    unbatched_workers: Annotated[
        str, typer.Option(help="comma-separated concurrency limits of the unbatched servers (best = baseline)")
    ] = "1,2,4",
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
) -> None:
    """Latency p50/p95/p99 + throughput at concurrency 1/4/16 (shop shots) and 1/16 (street
    scenes), batching against the best unbatched limit, and an open-loop load run."""
    from pipelines.deploy.bench import bench_serve

    try:
        limits = tuple(int(w) for w in unbatched_workers.split(",") if w.strip())
        if not limits or min(limits) < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            f"--unbatched-workers wants positive integers like 1,2,4, got {unbatched_workers!r}"
        ) from None
    report = bench_serve(
        bundle=bundle,
        world=world,
        duration_s=duration,
        n_requests=requests,
        unbatched_workers=limits,
        echo=typer.echo,
    )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
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
        Path(out).parent.mkdir(parents=True, exist_ok=True)
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
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2))
