"""DVC plumbing: the project's ``data/`` tree is one DVC output described by ``data.dvc``.

DVC runs with ``core.no_scm`` so the same commands work in a git clone and in a plain copy
of the project. The default remote is ``<root>/.dvc-storage`` (git-ignored, outside the
tracked tree); ``TAILOR_DVC_REMOTE`` points it elsewhere through ``.dvc/config.local``.
DVC takes its own repository lock, but a second caller fails at once ("Unable to acquire
lock") rather than waiting; :func:`dvc_lock` (a file lock under ``var/run``) makes every
Tailor process wait its turn instead, across ``add`` + ``push`` as one step, and every DVC
command has a timeout. Staging folders (``.<name>.partial``) are in ``.dvcignore``, so a
snapshot or training set still being written is never recorded half-done.
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from pipelines.settings import Settings, get_settings

_DEFAULT_REMOTE_NAME = "local"


def _dvc_bin() -> str:
    candidate = Path(sys.executable).parent / "dvc"
    return str(candidate) if candidate.exists() else "dvc"


#: Longest a DVC command may run (a push of a large tree to a slow remote included).
DVC_TIMEOUT_S = 1800.0
#: Longest a caller waits for another process's DVC step before giving up.
DVC_LOCK_WAIT_S = 1800.0


@contextlib.contextmanager
def dvc_lock(s: Settings | None = None, wait_s: float = DVC_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the project's DVC lock (``var/run/dvc.lock``); re-entrant within a thread.

    Raises TimeoutError naming the lock file when another holder keeps it past ``wait_s``.
    """
    s = s or get_settings()
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    path = Path(s.run_dir) / "dvc.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another DVC step held {path} for over {wait_s:.0f}s") from None
                time.sleep(0.2)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_held = threading.local()


def dvc(
    *args: str, s: Settings | None = None, check: bool = True, timeout_s: float = DVC_TIMEOUT_S
) -> subprocess.CompletedProcess:
    """Run one ``dvc`` command in the project root under :func:`dvc_lock`; raise with DVC's
    own message on failure, or naming the command when it runs past ``timeout_s``."""
    s = s or get_settings()
    with dvc_lock(s):
        try:
            proc = subprocess.run([_dvc_bin(), *args], cwd=s.root, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"dvc {' '.join(args)} did not finish within {timeout_s:.0f}s") from None
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"dvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
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
        if str(s.dvc_remote).startswith("s3://"):
            # Object storage (the cluster profile): endpoint and keys go to .dvc/config.local,
            # which is git-ignored, like the generated credentials they come from.
            opts = {
                "endpointurl": s.s3_endpoint_url,
                "access_key_id": s.aws_access_key_id,
                "secret_access_key": s.aws_secret_access_key,
            }
            for key, value in opts.items():
                if value:
                    dvc("remote", "modify", "--local", "override", key, str(value), s=s)
    data = Path(s.data_dir)
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
    with dvc_lock(s):  # add, push and the hash read are one step: no other add in between
        ensure_initialised(s)
        dvc("add", "data", s=s)
        if push:
            dvc("push", "data.dvc", s=s)
        return data_hash(s)
