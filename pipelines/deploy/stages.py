"""The deploy stages as the ``deploy_bento`` DAG and ``tailor deploy run`` call them.

Each stage takes and returns a small JSON-able dict (paths, ids, versions). :func:`deploy`
chains them and, when any stage fails, stops the candidate and leaves the public port as
it was (the previous release keeps serving) before re-raising with the reason.
"""

from __future__ import annotations

import json
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


def begin_stage(owner: str, s: Settings | None = None) -> str:
    """Take the deploy lease for ``owner`` (a DAG run: ``dag:<run_id>``), waiting for any
    other deploy or rollback to finish (:mod:`pipelines.deploy.lease`)."""
    from . import lease

    lease.acquire(owner, s or get_settings())
    return owner


def end_stage(owner: str, s: Settings | None = None) -> bool:
    """Give the deploy lease back (after the switch, or in the failure path)."""
    from . import lease

    return lease.release(owner, s or get_settings())


def switch_stage(rel: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Move the public port to the release with no gap; the old slot is drained and stopped."""
    from . import release

    return release.switch(rel, s or get_settings())


def deploy(
    params: dict[str, Any] | None = None, build: bool = True, s: Settings | None = None, world: Path | None = None
) -> dict[str, Any]:
    """bundle -> build -> candidate -> smoke -> switch, all in one process (``tailor deploy run``).

    On any failure the candidate is stopped, the public port is untouched (or restored by
    :func:`~pipelines.deploy.release.switch`) and RuntimeError names the failed stage.
    """
    import os
    import threading

    from . import lease, release

    s = s or get_settings()
    stage = "lease"
    try:
        # one deploy at a time, from the bundle to the switch (another one waits here)
        with lease.held(f"cli:{os.getpid()}:{threading.get_ident()}", s):
            stage = "bundle"
            rel = bundle_stage(params, s)
            if build:
                stage = "build"
                rel = build_stage(rel, s)
            stage = "candidate"
            rel = candidate_stage(rel, s)
            stage = "smoke"
            rel = smoke_stage(rel, s, world=world)
            stage = "switch"
            return switch_stage(rel, s)
    except lease.DeployBusy:
        raise  # nothing of ours is running: leave the holder's candidate alone
    except Exception as exc:
        release.stop_candidate(s)
        state = release.read_state(s)
        release._event(state, "deploy_failed", stage=stage, reason=str(exc)[:500])
        release._write_state(state, s)
        raise RuntimeError(
            f"deploy failed at stage {stage!r}; the previous release keeps serving "
            f"({state.get('current') or 'none'}): {exc}"
        ) from exc
