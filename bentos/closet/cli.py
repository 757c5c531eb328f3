"""``tailor users ...`` and ``tailor closet ...``: API tokens and closet maintenance.

Heavy imports (torch, the models) stay inside the commands that need them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

users_app = typer.Typer(help="Shoppers' API tokens for the closet and look routes.", no_args_is_help=True)
closet_app = typer.Typer(
    help="The closet database: migrations and re-tagging after a model update.", no_args_is_help=True
)


def _store():  # noqa: ANN202
    from bentos.closet.store import ClosetStore

    return ClosetStore.from_settings()


@users_app.command("add")
def users_add(name: Annotated[str, typer.Argument(help="the user's name (1-64 characters)")]) -> None:
    """Create a user and print its API token (shown once: only its hash is stored)."""
    try:
        token = _store().add_user(name)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(token)


def issue_token(name: str, out: Path | None = None) -> str:
    """A token for ``name``: the user is created on first use, later calls rotate its token
    (only hashes are stored, so an old token cannot be shown again). With ``out`` the token
    is also written there, readable by its owner only."""
    store = _store()
    try:
        token = store.add_user(name)
    except ValueError:
        token = store.rotate_token(name)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600, exist_ok=True)
        out.chmod(0o600)
        out.write_text(token + "\n")
    return token


@users_app.command("token")
def users_token(
    name: Annotated[str, typer.Argument(help="the user's name (1-64 characters)")],
    out: Annotated[Path | None, typer.Option(help="also write the token to this file (owner-only)")] = None,
) -> None:
    """Create the user if new, else rotate its token; print the token (the demo's shopper)."""
    try:
        token = issue_token(name, out)
    except ValueError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(token)


@users_app.command("list")
def users_list() -> None:
    """Every user with its state and item count (never a token)."""
    for u in _store().list_users():
        typer.echo(f"{u['name']}\t{'revoked' if u['revoked'] else 'active'}\t{u['items']} items\t{u['created_at']}")


@users_app.command("revoke")
def users_revoke(name: str) -> None:
    """Revoke a user's token (its requests get 401); the closet is kept."""
    from bentos.closet.store import UnknownUser

    try:
        _store().revoke(name)
    except UnknownUser:
        typer.secho(f"error: no user {name!r}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"revoked {name}")


@users_app.command("rotate")
def users_rotate(name: str) -> None:
    """Issue a new token for a user (the old one stops working) and print it."""
    from bentos.closet.store import UnknownUser

    try:
        typer.echo(_store().rotate_token(name))
    except UnknownUser:
        typer.secho(f"error: no user {name!r}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@closet_app.command("migrate")
def closet_migrate() -> None:
    """Apply the closet database's migrations (the service also does at start)."""
    from pipelines.settings import get_settings

    rev = _store().revision()
    typer.echo(f"{get_settings().closet_db_url.split('@')[-1]}: at revision {rev}")


@closet_app.command("retag")
def closet_retag(
    bundle: Annotated[Path | None, typer.Option(help="bundle directory; default: the live release's")] = None,
    user: Annotated[str | None, typer.Option(help="only this user's closet")] = None,
) -> None:
    """Recompute category, tags and embedding of every closet item with a bundle's models
    (after a model update); what users corrected by hand is kept."""
    import torch
    from PIL import Image, ImageOps

    from bentos.closet.store import Analysis
    from bentos.engine import Bundle, SearchEngine

    if bundle is None:
        from pipelines.deploy.release import read_state, release_info

        current = read_state().get("current")
        if not current:
            typer.secho("error: nothing is deployed; pass --bundle", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        bundle = Path(release_info(current)["bundle"])
    torch.set_num_threads(2)
    engine = SearchEngine(Bundle.load(bundle))

    def analyze(path: Path) -> Analysis:
        with Image.open(path) as im:
            d = engine.describe(ImageOps.exif_transpose(im).convert("RGB"))
        return Analysis(
            d["category"], float(d["category_score"]), d["tags"], d["embedding"], d["box"], dict(engine.bundle.versions)
        )

    res = _store().retag(analyze, user)
    typer.echo(json.dumps({**res, "versions": engine.bundle.versions}))
