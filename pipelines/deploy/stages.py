"""The deploy stages: begin (take the lease) -> bundle -> build -> candidate -> smoke ->
switch -> end (give it back), and :func:`fail_stage`, the one failure path.

The ``deploy_bento`` DAG runs one task per stage and ``tailor deploy run`` chains the same
functions (:func:`deploy`). Each stage takes and returns a small JSON-able dict (paths,
ids, versions). Whichever stage fails, both go through :func:`fail_stage`: the candidate is
stopped, the failure is recorded in the deploy state, the lease is given back, and the
public port is left as it was (the previous release keeps serving).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings


def bundle_stage(params: dict[str, Any] | None = None, s: Settings | None = None) -> dict[str, Any]:
    """Create a release from: an existing bundle dir (``params["bundle"]``), an untrained
    bundle over a world (``params["fresh_world"]``, tests/demo), or by default the registry's
    ``@champion`` models + the index built for the champion embedder."""
    from . import bundle, release

    s = s or get_settings()
    params = params or {}
    out = release.deploy_dir(s) / "staging-bundle"
    if params.get("bundle"):
        b = Path(params["bundle"])
        manifest = json.loads((b / "manifest.json").read_text())
        info = {"bundle": str(b), "versions": manifest["versions"], "id": manifest.get("id", "bundle")}
    elif params.get("fresh_world"):
        info = bundle.fresh_bundle(out, Path(params["fresh_world"]), seed=int(params.get("seed", 0)))
    else:
        info = bundle.build_bundle(
            out,
            index_dir=Path(params["index_dir"]) if params.get("index_dir") else None,
            world=Path(params["world"]) if params.get("world") else None,
            s=s,
        )
    return release.new_release(info, s)


def build_stage(rel: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """``bentoml build`` of the release (Bento tag recorded in the release)."""
    from . import release

    return release.build_bento(rel, s or get_settings())


def candidate_stage(rel: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Start the release in the idle slot behind the gateway and wait until it is ready."""
    from . import release

    return release.start_candidate(rel, s or get_settings())


def smoke_stage(rel: dict[str, Any], s: Settings | None = None, world: Path | None = None) -> dict[str, Any]:
    """Smoke-test the candidate; stops it and raises with the reasons when it fails."""
    from . import release
    from .smoke import smoke

    s = s or get_settings()
    try:
        report = smoke(
            rel["candidate_url"],
            Path(rel["bundle"]),
            expected_versions=rel["versions"],
            world=world or s.demo_world_dir,
        )
    except Exception:
        release.stop_candidate(s)
        raise
    return {**rel, "smoke": report}


def begin_stage(owner: str, s: Settings | None = None, pid: int | None = None) -> str:
    """Take the deploy lease for ``owner`` (a DAG run: ``dag:<run_id>``; ``pid``: the process
    whose end also ends it, for a one-process deploy), waiting for any other deploy or
    rollback to finish (:mod:`pipelines.deploy.lease`)."""
    from . import lease

    lease.acquire(owner, s or get_settings(), pid=pid)
    return owner


def end_stage(owner: str, s: Settings | None = None) -> bool:
    """Give the deploy lease back (after the switch, or in the failure path)."""
    from . import lease

    return lease.release(owner, s or get_settings())


def fail_stage(owner: str, stage: str, reason: str, s: Settings | None = None) -> bool:
    """The one failure path of a deploy (``tailor deploy run`` and the DAG's ``cleanup``):
    when ``owner`` holds the lease, stop the candidate, record ``deploy_failed`` with the
    stage and reason, and give the lease back. The public port is not touched here (a
    failed switch restores it itself). Returns False, doing nothing, for an owner that does
    not hold the lease: the candidate, if any, is another deploy's."""
    from . import lease, release

    s = s or get_settings()
    cur = lease.holder(s)
    if cur is None or cur["owner"] != owner:
        return False
    release.stop_candidate(s)
    release.record_failure(stage, reason, s)
    lease.release(owner, s)
    return True


def switch_stage(rel: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Move the public port to the release with no gap; the old slot is drained and stopped."""
    from . import release

    return release.switch(rel, s or get_settings())


class DeployFailed(RuntimeError):
    """A deploy stage failed; the failure path has run and the previous release serves."""


@contextlib.contextmanager
def failure_path(stage: str, owner: str, s: Settings | None = None) -> Iterator[None]:
    """Run a stage of ``owner``'s deploy; if it raises, take :func:`fail_stage` and re-raise
    as :class:`DeployFailed` naming the stage and what still serves. The DAG's tasks and
    :func:`deploy` wrap every stage in it, so a failure leaves the same state behind
    whichever way the deploy was started. A lost lease (``DeployBusy``) and interrupts
    pass through unchanged."""
    from . import lease, release

    try:
        yield
    except BaseException as exc:
        s = s or get_settings()
        fail_stage(owner, stage, str(exc), s)
        if isinstance(exc, lease.DeployBusy) or not isinstance(exc, Exception):
            raise
        raise DeployFailed(
            f"deploy failed at stage {stage!r}; the previous release keeps serving "
            f"({release.read_state(s).get('current') or 'none'}): {exc}"
        ) from exc


def deploy(
    params: dict[str, Any] | None = None, build: bool = True, s: Settings | None = None, world: Path | None = None
) -> dict[str, Any]:
    """begin -> bundle -> build -> candidate -> smoke -> switch -> end, all in one process
    (``tailor deploy run``); raises :class:`DeployFailed` (a RuntimeError) after the failure
    path when a stage fails (:func:`failure_path`)."""
    import os
    import threading

    s = s or get_settings()
    owner = begin_stage(f"cli:{os.getpid()}:{threading.get_ident()}", s, pid=os.getpid())
    with failure_path("bundle", owner, s):
        rel = bundle_stage(params, s)
    if build:
        with failure_path("build", owner, s):
            rel = build_stage(rel, s)
    with failure_path("candidate", owner, s):
        rel = candidate_stage(rel, s)
    with failure_path("smoke", owner, s):
        rel = smoke_stage(rel, s, world=world)
    with failure_path("switch", owner, s):
        out = switch_stage(rel, s)
    end_stage(owner, s)
    return out
