"""What every ``tailor`` command module shares."""

from __future__ import annotations

from typing import NoReturn

import typer


def fail(msg: str) -> NoReturn:
    """Print ``error: msg`` in red on stderr and exit with status 2 (bad input or state)."""
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
