"""One deploy at a time: a lease on ``var/deploy`` held from bundle to switch, and by a rollback.

``deploy_bento`` (a DAG run whose stages run as separate task processes), ``tailor deploy
run`` and ``tailor deploy rollback`` all change the same pid files, ports and
``state.json``. Whoever changes them first takes the lease (``var/deploy/lease.json``,
written under a short ``flock``); the others wait for it, then fail with
:class:`DeployBusy` naming the holder.

A lease ends when its holder releases it, when it expires (``ttl_s``: a DAG run that died
without its cleanup task), or when the process that took it (``pid`` plus that process's
start time, so a reused pid does not count) is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings

#: How long a deploy may hold the lease before another may take it over.
TTL_S = 3 * 3600.0
#: How long a caller waits for the lease by default.
WAIT_S = 1800.0


class DeployBusy(RuntimeError):
    """Another deploy or rollback holds the lease."""


def _paths(s: Settings) -> tuple[Path, Path]:
    d = s.deploy_dir
    d.mkdir(parents=True, exist_ok=True)
    return d / "lease.json", d / ".lease.lock"


@contextlib.contextmanager
def _critical(s: Settings) -> Iterator[Path]:
    lease, lock = _paths(s)
    with open(lock, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # held for a read-modify-write of lease.json only
        try:
            yield lease
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def holder(s: Settings | None = None) -> dict[str, Any] | None:
    """The live lease (``owner``, ``since``, ``expires``, ``pid``), or None."""
    s = s or get_settings()
    with _critical(s) as path:
        return _live(path)


def _live(path: Path) -> dict[str, Any] | None:
    from pipelines.services import process_start_time

    try:
        lease = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if time.time() > float(lease.get("expires", 0)):
        return None
    pid = lease.get("pid")
    if pid is not None:
        started = process_start_time(int(pid))
        if started is None or abs(started - float(lease.get("pid_start") or 0)) > 0.5:
            return None  # the process that took it is gone
    return lease


def acquire(
    owner: str, s: Settings | None = None, pid: int | None = None, wait_s: float = WAIT_S, ttl_s: float = TTL_S
) -> dict[str, Any]:
    """Take the lease for ``owner`` (again, if it already holds it); wait up to ``wait_s``.

    ``pid``: the process whose end also ends the lease (a CLI deploy); None for a DAG run,
    whose tasks are separate processes (its lease ends on release or expiry).
    """
    from pipelines.services import process_start_time

    s = s or get_settings()
    deadline = time.monotonic() + wait_s
    while True:
        with _critical(s) as path:
            cur = _live(path)
            if cur is None or cur["owner"] == owner:
                now = time.time()
                lease = {
                    "owner": owner,
                    "since": (cur or {}).get("since", now),
                    "expires": now + ttl_s,
                    "pid": pid,
                    "pid_start": process_start_time(pid) if pid is not None else None,
                }
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(lease))
                os.replace(tmp, path)
                return lease
        if time.monotonic() > deadline:
            raise DeployBusy(
                f"{cur['owner']} has held the deploy lease since "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(cur['since']))}; "
                f"gave up after waiting {wait_s:.0f}s"
            )
        time.sleep(0.5)


def release(owner: str, s: Settings | None = None) -> bool:
    """Give the lease up if ``owner`` holds it; True when it did."""
    s = s or get_settings()
    with _critical(s) as path:
        cur = _live(path)
        if cur is not None and cur["owner"] == owner:
            path.unlink(missing_ok=True)
            return True
    return False


def check(owner: str, s: Settings | None = None) -> None:
    """Raise :class:`DeployBusy` unless ``owner`` still holds the lease (a DAG task
    between bundle and switch whose lease expired and was taken over must stop)."""
    cur = holder(s)
    if cur is None or cur["owner"] != owner:
        raise DeployBusy(f"{owner} no longer holds the deploy lease (now: {cur['owner'] if cur else 'nobody'})")


@contextlib.contextmanager
def held(owner: str, s: Settings | None = None, wait_s: float = WAIT_S) -> Iterator[None]:
    """The lease for the duration of a ``with`` block in this process."""
    acquire(owner, s, pid=os.getpid(), wait_s=wait_s)
    try:
        yield
    finally:
        release(owner, s)
