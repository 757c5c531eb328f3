"""``tailor mall serve`` (registered by pipelines/cli.py): the demo malls until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.clitools import fail
from pipelines.settings import get_settings


def mall_serve_cmd(
    world: Annotated[Path | None, typer.Option(help="world to build the demo malls from (default: demo world)")] = None,
    photos: Annotated[Path | None, typer.Option(help="folder of photos for a real-photo mall")] = None,
    labels: Annotated[Path | None, typer.Option(help="labels CSV for --photos (columns image,label)")] = None,
    base_port: Annotated[int | None, typer.Option(help="first port; malls take consecutive ports")] = None,
    faults: Annotated[bool, typer.Option(help="switch every fault type on")] = False,
    seed: Annotated[int, typer.Option(help="seed for product split and fault selection")] = 0,
) -> None:
    """Serve the demo malls (JSON-LD, microdata/OpenGraph, CSS-only, optional photo mall) until Ctrl-C."""
    from pipelines.malls import serve_forever

    s = get_settings()
    world = world or s.demo_world_dir
    if world and not (world / "world.json").exists():
        fail(f"{world} is not a generated world; run `tailor synth --out {world}` first")
    if photos is not None and labels is None:
        labels = photos / "labels.csv"
    serve_forever(
        world=world,
        photos=photos,
        labels=labels,
        host=s.host,
        base_port=base_port if base_port is not None else s.mall_base_port,
        faults=faults,
        seed=seed,
    )
