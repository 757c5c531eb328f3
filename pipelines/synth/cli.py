"""Commands of the synthetic world (registered by pipelines/cli.py): ``tailor synth``
(generate), ``tailor synth preview``, ``tailor synth baselines``, ``tailor bench synth``.
Heavy modules are imported inside the commands so ``tailor --help`` stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipelines.clitools import fail
from pipelines.settings import get_settings


def synth_cmd(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(help="output directory (default: the demo world)")] = None,
    seed: Annotated[int, typer.Option(help="random seed: same seed and options, same bytes")] = 0,
    products: Annotated[int, typer.Option(help="number of catalog products")] = 480,
    scenes: Annotated[int, typer.Option(help="number of street scenes")] = 200,
    long_tail: Annotated[float, typer.Option(help="Zipf exponent of category frequencies")] = 1.1,
    label_noise: Annotated[float, typer.Option(help="share of products with a wrong listed label")] = 0.03,
    broken_rate: Annotated[float, typer.Option(help="share of product image files written broken")] = 0.02,
    workers: Annotated[int, typer.Option(help="worker processes (output does not depend on it)")] = 1,
) -> None:
    """Generate a deterministic synthetic fashion world with ground truth for all four models."""
    if ctx.invoked_subcommand is not None:
        return
    from pipelines.synth.stages import generate_stage

    try:
        path = Path(
            generate_stage(
                seed,
                products,
                scenes,
                out,
                long_tail=long_tail,
                label_noise=label_noise,
                broken_rate=broken_rate,
                workers=workers,
            )
        )
    except ValueError as exc:
        fail(str(exc))
    counts = json.loads((path / "world.json").read_text())["counts"]
    typer.echo(f"world written to {path}: {json.dumps(counts, sort_keys=True)}")


def synth_preview_cmd(
    world: Annotated[Path | None, typer.Option(help="world directory (default: the demo world)")] = None,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: WORLD/preview.png)")] = None,
    n: Annotated[int, typer.Option(help="number of tiles")] = 16,
) -> None:
    """Write a contact sheet with ground truth drawn on, to check the world by eye."""
    from pipelines.synth.stages import preview_stage

    try:
        png = preview_stage(world or get_settings().demo_world_dir, out, n=n)
    except FileNotFoundError as exc:
        fail(str(exc))
    typer.echo(f"contact sheet: {png}")


def synth_baselines_cmd(
    world: Annotated[Path | None, typer.Option(help="world directory (default: the demo world)")] = None,
) -> None:
    """Score trivial models (majority class, whole-image box, mean-colour retrieval) on a world."""
    from pipelines.synth.baselines import trivial_baselines

    world = world or get_settings().demo_world_dir
    if not (world / "world.json").exists():
        fail(f"{world} is not a generated world (no world.json)")
    for name, value in trivial_baselines(world).items():
        typer.echo(f"{name:28s} {value:.3f}")


def bench_synth_cmd(
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    products: Annotated[int, typer.Option()] = 480,
    scenes: Annotated[int, typer.Option()] = 200,
) -> None:
    """Time world generation and print images/s."""
    import tempfile

    from pipelines.synth import WorldConfig
    from pipelines.synth.world import benchmark

    cfg = WorldConfig(n_products=products, n_scenes=scenes, workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        res = benchmark(Path(tmp) / "world", cfg)
    typer.echo(
        f"synth: {res['images']} images in {res['seconds']:.1f} s = {res['images_per_s']:.1f} images/s "
        f"(workers={workers})"
    )
