"""CLI commands of the validate stage: plain Typer-annotated functions the lead registers.

``tailor validate run|init|import-annotations`` and ``tailor quality report``. Only typer,
pathlib and typing are imported at module level so ``tailor --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def validate_run(
    snapshot: Annotated[str, typer.Argument(help="snapshot directory; empty = the latest crawl")] = "",
    annotations: Annotated[str, typer.Option(help="annotation import directory to validate too")] = "",
    previous_rows: Annotated[int, typer.Option(help="product count to compare with; -1 = last passed snapshot")] = -1,
    build: Annotated[bool, typer.Option(help="write the training set when no critical expectation failed")] = True,
) -> None:
    """Validate a crawl snapshot, write quarantine + curated catalog, and the training set."""
    from pipelines.validate import stages
    from pipelines.validate.errors import CriticalExpectationFailed

    snap = stages.resolve_stage(snapshot)
    try:
        run_dir = stages.validate_stage(snap, annotations, previous_rows)
    except CriticalExpectationFailed as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if build:
        ts = stages.build_stage(run_dir)
        info = stages.version_stage(ts)
        typer.echo(f"training set: {ts} (data version {info['data_version']})")


def validate_init() -> None:
    """Write/refresh the GX project (suites, validation definitions, checkpoints) from config."""
    from pipelines.settings import get_settings
    from pipelines.validate.config import load_validation_config
    from pipelines.validate.suites import ensure_project

    s = get_settings()
    ensure_project(Path(s.expectations_dir), load_validation_config())
    typer.echo(f"GX project up to date: {Path(s.expectations_dir) / 'gx'}")


def validate_import_annotations(
    world: Annotated[Path, typer.Argument(help="synthetic world directory (annotations/coco.json)")],
    name: Annotated[str, typer.Option(help="import name under data/imports/")] = "",
) -> None:
    """Import a world's COCO export + parsing PNGs + images into data/imports/<name> (DVC)."""
    from pipelines.settings import get_settings
    from pipelines.validate.annotations import import_annotations

    s = get_settings()
    out = s.imports_dir / (name or world.name)
    typer.echo(str(import_annotations(world, out, s=s)))


def quality_report(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1; 0 = a free port")] = -1,
) -> None:
    """Serve the Data Docs site and the snapshot summary on 127.0.0.1 and print the URL."""
    from pipelines.validate.serve import make_server

    srv, url = make_server(None if port < 0 else port)
    typer.echo(url, err=False)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
