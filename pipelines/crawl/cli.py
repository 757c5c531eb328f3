"""Typer-annotated commands of the crawl stage; the lead registers them in pipelines/cli.py.

``tailor crawl`` -> :func:`crawl_command`; ``tailor bench crawl`` -> :func:`bench_crawl_command`.
Only typer / pathlib / typing at module level so ``tailor --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def crawl_command(
    malls: Annotated[Path, typer.Option("--malls", help="malls YAML file")] = Path("config/malls.yaml"),
    out: Annotated[
        Path | None, typer.Option("--out", help="snapshot directory; default data/snapshots/<name> (DVC-versioned)")
    ] = None,
    mall: Annotated[list[str] | None, typer.Option("--mall", "-m", help="crawl only this mall; repeatable")] = None,
    max_pages: Annotated[int | None, typer.Option(help="override every mall's max_pages")] = None,
    max_depth: Annotated[int | None, typer.Option(help="override every mall's max_depth")] = None,
    time_budget: Annotated[float | None, typer.Option(help="override every mall's time budget (s)")] = None,
    name: Annotated[str | None, typer.Option(help="snapshot name (re-using one resumes that crawl)")] = None,
    polite: Annotated[
        bool, typer.Option("--polite/--no-polite", help="--no-polite: no delays (own test servers only)")
    ] = True,
    dvc: Annotated[bool, typer.Option("--dvc/--no-dvc", help="add to DVC when inside the data tree")] = True,
    push: Annotated[bool, typer.Option("--push/--no-push", help="push the DVC data version")] = True,
) -> None:
    """Crawl the malls of a YAML file into a new immutable snapshot and print its summary."""
    import json

    from pipelines.crawl.config import ConfigError
    from pipelines.crawl.pipeline import crawl

    try:
        info = crawl(
            malls,
            out=out,
            names=mall or None,
            max_pages=max_pages,
            max_depth=max_depth,
            time_budget_s=time_budget,
            polite=polite,
            snapshot_name=name,
            dvc=None if dvc else False,
            push=push,
        )
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
    st = info["stats"]
    typer.echo(f"snapshot {info['path']}")
    typer.echo(f"  id {info['snapshot_id'] or '(not DVC-versioned: outside the data tree)'}")
    typer.echo(
        f"  {st['products']} products ({st['removed']} removed, {st['merged_duplicates']} merged "
        f"duplicates), {st['images']} images, {st['pages']} pages, {st['failures']} failures "
        f"{json.dumps(st['errors_by_kind'])}, {st['duration_s']}s"
    )


def bench_crawl_command(
    products: Annotated[int, typer.Option(help="products in the benchmark mall")] = 400,
    delay: Annotated[float, typer.Option(help="politeness delay (s) for the polite run")] = 0.2,
    polite_pages: Annotated[int, typer.Option(help="pages fetched in the polite run")] = 25,
    seed: Annotated[int, typer.Option()] = 0,
    world: Annotated[
        Path | None,
        typer.Option(help="serve this world's catalog (e.g. var/worlds/demo); default: a fresh demo-sized world"),
    ] = None,
) -> None:
    """Print crawler pages/s and images/s on loopback, and the polite request rate measured."""
    from pipelines.crawl.bench import run_benchmark

    if world is not None and not (world / "products.jsonl").exists():
        raise typer.BadParameter(f"{world} is not a world (no products.jsonl); see `tailor synth`")
    run_benchmark(products=products, delay_s=delay, polite_pages=polite_pages, seed=seed, world=world)
