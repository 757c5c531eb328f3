"""DVC plumbing: the project's ``data/`` tree is one DVC output described by ``data.dvc``.

DVC runs with ``core.no_scm`` so the same commands work in a git clone and in a plain copy
of the project. The default remote is ``<root>/.dvc-storage`` (git-ignored, outside the
tracked tree); ``TAILOR_DVC_REMOTE`` points it elsewhere through ``.dvc/config.local``.
DVC takes its own repository lock, so concurrent callers fail fast instead of corrupting
the cache; the DAGs additionally run DVC tasks in a single-slot pool.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from pipelines.settings import Settings, get_settings

_DEFAULT_REMOTE_NAME = "local"


def _dvc_bin() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


def dvc(*args: str, s: Settings | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run one ``dvc`` command in the project root; raise with DVC's own message on failure."""
    s = s or get_settings()
    proc = subprocess.run([_dvc_bin(), *args], cwd=s.root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ensure_initialised(s: Settings | None = None) -> Path:
    """Make the project a usable DVC repo with ``data/`` present; idempotent.

    A fresh clone has ``.dvc/config`` and ``data.dvc`` but no ``data/``: it is restored
    from the cache or remote when they hold it, and created empty otherwise (the committed
    ``data.dvc`` of a fresh project describes an empty tree).
    """
    s = s or get_settings()
    root = Path(s.root)
    if not (root / ".dvc" / "config").exists():
        dvc("init", "--no-scm", "-f", s=s)
        dvc("config", "core.no_scm", "true", s=s)
        dvc("remote", "add", "-d", "-f", _DEFAULT_REMOTE_NAME, "../.dvc-storage", s=s)
    default_remote = str(root / ".dvc-storage")
    if s.dvc_remote and str(s.dvc_remote) != default_remote:
        dvc("remote", "add", "--local", "-d", "-f", "override", str(s.dvc_remote), s=s)
    data = Path(s.data_dir)  # type: ignore[arg-type]
    if not data.exists():
        if (root / "data.dvc").exists():
            # Restore what the cache/remote has; a missing object is not fatal here.
            dvc("pull", "data.dvc", s=s, check=False)
        data.mkdir(parents=True, exist_ok=True)
    if not (root / "data.dvc").exists():
        dvc("add", "data", s=s)
    return root / "data.dvc"


def data_hash(s: Settings | None = None) -> str:
    """The DVC md5 of the ``data/`` tree as recorded in ``data.dvc`` (the data version id)."""
    s = s or get_settings()
    meta = yaml.safe_load((Path(s.root) / "data.dvc").read_text())
    return str(meta["outs"][0]["md5"])


def commit_data(push: bool = True, s: Settings | None = None) -> str:
    """Record the current ``data/`` tree in ``data.dvc`` (and push it); return its hash."""
    s = s or get_settings()
    ensure_initialised(s)
    dvc("add", "data", s=s)
    if push:
        dvc("push", "data.dvc", s=s)
    return data_hash(s)
