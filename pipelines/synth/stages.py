"""The demo-world stages: generate -> contact sheet.

The ``demo_world`` DAG runs one task per stage; ``tailor synth`` and ``tailor demo`` call
the same functions. Both take and return paths (as strings, for XCom).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.settings import Settings, get_settings


def generate_stage(
    seed: int = 0,
    products: int | None = None,
    scenes: int | None = None,
    out: Path | str | None = None,
    s: Settings | None = None,
    **options: float | int,
) -> str:
    """Generate the synthetic world (deterministic: same seed and options, same bytes) into
    ``out`` (default: the settings' demo world); returns its directory. ``products`` and
    ``scenes`` left None keep the generator's defaults; ``options`` are further
    :class:`~pipelines.synth.WorldConfig` fields (long_tail, label_noise, ...)."""
    from pipelines.synth import WorldConfig, generate_world

    s = s or get_settings()
    size = {k: v for k, v in (("n_products", products), ("n_scenes", scenes)) if v is not None}
    target = Path(out) if out else s.demo_world_dir
    return str(generate_world(target, WorldConfig(seed=seed, **size, **options)))


def preview_stage(world: Path | str, out: Path | str | None = None, n: int = 16) -> str:
    """Draw the world's contact sheet (ground truth on top) to ``out`` (default
    ``<world>/preview.png``); returns its path."""
    from pipelines.synth import preview

    world = Path(world)
    if not (world / "world.json").exists():
        raise FileNotFoundError(f"{world} is not a generated world (no world.json); run `tailor synth --out {world}`")
    return str(preview(world, Path(out) if out else world / "preview.png", n=n))
