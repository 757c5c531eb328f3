"""Releases of the search Bento: build -> candidate on the staging port -> smoke -> switch.

A release is a directory ``var/deploy/releases/<id>/`` with ``bundle/`` (the exact models
and index), ``ctx/`` (the Bento's build context) and ``release.json`` (id, Bento tag,
versions). ``var/deploy/state.json`` records the current release and the ones before it.

The public port (``bento_port``, 3000) and the staging port (``bento_staging_port``, 3001)
each run at most one ``bentoml serve`` started through :mod:`pipelines.services` mechanics
(detached process group, pid file and log under ``var/run``, health wait). Switching stops
the public server and starts the candidate's Bento there; when that start fails, the
previous release is started again, so a failed deploy leaves the previous one serving (a
few seconds of downtime during the switch are accepted in the embedded default; the
Kubernetes manifest in ``bentos/k8s`` does rolling updates for zero downtime).

One deploy or rollback changes these at a time: each holds the deploy lease
(:mod:`pipelines.deploy.lease`) from its bundle to its switch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from pipelines import services as svcs
from pipelines.settings import PROJECT_ROOT, Settings, get_settings

PUBLIC, CANDIDATE = "bento", "bento-candidate"


# --------------------------------------------------------------------------- layout / state
def deploy_dir(s: Settings | None = None) -> Path:
    """``var/deploy``: releases and ``state.json``."""
    s = s or get_settings()
    return Path(s.var_dir) / "deploy"  # type: ignore[arg-type]


def _state_file(s: Settings) -> Path:
    return deploy_dir(s) / "state.json"


def read_state(s: Settings | None = None) -> dict[str, Any]:
    """``{"current": id | None, "history": [ids, oldest first], "events": [...]}``."""
    s = s or get_settings()
    f = _state_file(s)
    return json.loads(f.read_text()) if f.exists() else {"current": None, "history": [], "events": []}


def _write_state(state: dict[str, Any], s: Settings) -> None:
    f = _state_file(s)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(f)  # atomic: a reader sees the old or the new state


def _event(state: dict[str, Any], kind: str, **info: Any) -> None:
    state.setdefault("events", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": kind, **info})
    state["events"] = state["events"][-50:]


def release_info(release_id: str, s: Settings | None = None) -> dict[str, Any]:
    """The ``release.json`` of one release."""
    s = s or get_settings()
    return json.loads((deploy_dir(s) / "releases" / release_id / "release.json").read_text())


# --------------------------------------------------------------------------- processes
def _bento_env(s: Settings, bundle: str) -> dict[str, str]:
    return {
        "BENTOML_HOME": str(s.bentoml_home),
        **svcs.NO_USAGE_DATA,
        "TAILOR_BUNDLE_DIR": str(bundle),
        "TAILOR_ROOT": str(s.root),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }


def server_service(name: str, release: dict[str, Any], port: int, s: Settings, startup_timeout_s: float = 300.0) -> svcs.Service:
    """The :class:`pipelines.services.Service` running ``release`` on ``port``.

    A release with a Bento tag serves the built Bento; one without (``build=False``) serves
    ``bentos.service:Tailor`` from the source tree with the release's bundle.
    """
    target = release.get("bento") or "bentos.service:Tailor"
    argv = [svcs._bin("bentoml"), "serve", target, "--host", s.host, "--port", str(port)]
    return svcs.Service(name=name, argv=argv, port=port, health_path="/readyz",
                        env=_bento_env(s, release["bundle"]), startup_timeout_s=startup_timeout_s)


def start_service(svc: svcs.Service, s: Settings) -> dict[str, Any]:
    """Start ``svc`` detached and wait until ready; refuses one that already runs."""
    return svcs.start(svc, s, already_running_ok=False)


def stop_service(svc: svcs.Service, s: Settings, timeout_s: float = 30.0) -> bool:
    """Stop ``svc``'s process group (SIGTERM, then SIGKILL); False when it was not running."""
    return svcs.stop(svc, s, timeout_s=timeout_s)


def _named(name: str, port: int, s: Settings) -> svcs.Service:
    """A Service handle for stopping/inspecting by name (argv unused)."""
    return svcs.Service(name=name, argv=[], port=port, health_path="/readyz")


def stop_all(s: Settings | None = None) -> dict[str, bool]:
    """Stop the public and candidate servers (``tailor down``); name -> whether it was running."""
    s = s or get_settings()
    return {name: stop_service(_named(name, port, s), s)
            for name, port in ((PUBLIC, s.bento_port), (CANDIDATE, s.bento_staging_port))}


# --------------------------------------------------------------------------- stages
def new_release(bundle_info: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Create ``releases/<id>/`` and move (or copy) the bundle into it."""
    s = s or get_settings()
    rid = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{bundle_info.get('id', 'x')[:8]}"
    rdir = deploy_dir(s) / "releases" / rid
    rdir.mkdir(parents=True, exist_ok=False)
    shutil.copytree(bundle_info["bundle"], rdir / "bundle")
    info = {"id": rid, "dir": str(rdir), "bundle": str(rdir / "bundle"), "versions": bundle_info["versions"],
            "bento": None, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (rdir / "release.json").write_text(json.dumps(info, indent=2))
    return info


def build_bento(release: dict[str, Any], s: Settings | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
    """Assemble the build context (bentos/ + bundle, config, models/, pipelines/) and run
    ``bentoml build`` into ``settings.bentoml_home``; records the Bento tag in the release."""
    s = s or get_settings()
    rdir = Path(release["dir"])
    ctx = rdir / "ctx"
    if ctx.exists():
        shutil.rmtree(ctx)
    root = PROJECT_ROOT
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "bundle", "k8s")
    shutil.copytree(root / "bentos", ctx / "bentos", ignore=skip)
    # hard links: the bundle is ~100 MB and both copies are read-only
    shutil.copytree(release["bundle"], ctx / "bentos" / "bundle", copy_function=_link_or_copy)
    for sub in ("models", "pipelines"):
        shutil.copytree(root / sub, ctx / sub, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    (ctx / "config").mkdir()
    for f in ("serving.yaml", "train.yaml"):
        if (root / "config" / f).exists():
            shutil.copy2(root / "config" / f, ctx / "config" / f)
    (ctx / "requirements").mkdir()
    shutil.copy2(root / "requirements" / "lock.txt", ctx / "requirements" / "lock.txt")
    env = {**os.environ, **svcs.NO_USAGE_DATA, "BENTOML_HOME": str(s.bentoml_home),
           "TAILOR_BUNDLE_DIR": str(ctx / "bentos" / "bundle")}
    Path(s.bentoml_home).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
    proc = subprocess.run([svcs._bin("bentoml"), "build", "-f", "bentos/bentofile.yaml", "--output", "tag", "."],
                          cwd=ctx, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"bentoml build failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    tag = next((ln.split("__tag__:")[-1].strip() for ln in proc.stdout.splitlines() if "__tag__:" in ln), None)
    if tag is None:
        tag = proc.stdout.strip().splitlines()[-1].strip()
    shutil.rmtree(ctx, ignore_errors=True)  # the Bento store now holds the copy
    release = {**release, "bento": tag}
    (rdir / "release.json").write_text(json.dumps(release, indent=2))
    return release


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def start_candidate(release: dict[str, Any], s: Settings | None = None, port: int | None = None) -> dict[str, Any]:
    """Start ``release`` on the staging port (stopping a leftover candidate first)."""
    s = s or get_settings()
    port = port or s.bento_staging_port
    stop_service(_named(CANDIDATE, port, s), s)
    start_service(server_service(CANDIDATE, release, port, s), s)
    return {**release, "candidate_url": s.url(port)}


def stop_candidate(s: Settings | None = None) -> bool:
    """Stop the staging server (if any)."""
    s = s or get_settings()
    return stop_service(_named(CANDIDATE, s.bento_staging_port, s), s)


def switch(release: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Serve ``release`` on the public port; on failure restart the previous release there.

    Raises RuntimeError (after restoring the previous release) when the new one does not
    become ready.
    """
    s = s or get_settings()
    state = read_state(s)
    previous = state.get("current")
    stop_candidate(s)  # its port and memory are no longer needed
    public = _named(PUBLIC, s.bento_port, s)
    stop_service(public, s)
    try:
        start_service(server_service(PUBLIC, release, s.bento_port, s), s)
        if not _search_ok(s.url(s.bento_port)):
            raise RuntimeError("the new release answers /readyz but not /search on the public port")
    except Exception as exc:
        stop_service(public, s)
        restored = None
        if previous:
            start_service(server_service(PUBLIC, release_info(previous, s), s.bento_port, s), s)
            restored = previous
        _event(state, "switch_failed", release=release["id"], restored=restored, reason=str(exc)[:500])
        _write_state(state, s)
        raise RuntimeError(f"switch to {release['id']} failed; {'restored ' + restored if restored else 'nothing to restore'}: {exc}") from exc
    if previous:
        state.setdefault("history", []).append(previous)
    state["current"] = release["id"]
    _event(state, "switched", release=release["id"], previous=previous, versions=release.get("versions"))
    _write_state(state, s)
    return {**release, "url": s.url(s.bento_port), "previous": previous}


def _search_ok(url: str) -> bool:
    """One tiny search on the public port (the switch's own check; the full smoke ran on staging)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 80, 80)).save(buf, "JPEG")
    try:
        r = httpx.post(f"{url}/search", files={"image": ("x.jpg", buf.getvalue(), "image/jpeg")}, data={"k": "1"}, timeout=60)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def rollback(s: Settings | None = None) -> dict[str, Any]:
    """Serve the release before the current one on the public port again (after any deploy
    in progress has finished: both hold the deploy lease)."""
    import threading

    from . import lease

    s = s or get_settings()
    with lease.held(f"rollback:{os.getpid()}:{threading.get_ident()}", s):
        return _rollback(s)


def _rollback(s: Settings) -> dict[str, Any]:
    state = read_state(s)
    if not state.get("history"):
        raise RuntimeError("nothing to roll back to: no previous release recorded")
    target = state["history"][-1]
    current = state.get("current")
    public = _named(PUBLIC, s.bento_port, s)
    stop_service(public, s)
    try:
        start_service(server_service(PUBLIC, release_info(target, s), s.bento_port, s), s)
    except Exception as exc:
        if current:  # the rollback target is broken: keep what served before
            start_service(server_service(PUBLIC, release_info(current, s), s.bento_port, s), s)
        _event(state, "rollback_failed", target=target, reason=str(exc)[:500])
        _write_state(state, s)
        raise RuntimeError(f"rollback to {target} failed; {current} restored: {exc}") from exc
    state["history"] = state["history"][:-1]
    state["current"] = target
    _event(state, "rolled_back", release=target, previous=current)
    _write_state(state, s)
    return {"current": target, "previous": current, "url": s.url(s.bento_port)}


def ensure_serving(s: Settings | None = None) -> dict[str, Any] | None:
    """Start the current release on the public port when nothing serves it (after a reboot)."""
    s = s or get_settings()
    state = read_state(s)
    if not state.get("current") or svcs._read_pid(_named(PUBLIC, s.bento_port, s), s) is not None:
        return None
    return start_service(server_service(PUBLIC, release_info(state["current"], s), s.bento_port, s), s)


def status(s: Settings | None = None) -> dict[str, Any]:
    """Current release, versions, what answers on the public and staging ports, history."""
    s = s or get_settings()
    state = read_state(s)
    out: dict[str, Any] = {"current": state.get("current"), "history": state.get("history", []),
                           "last_events": state.get("events", [])[-5:]}
    if state.get("current"):
        try:
            out["release"] = release_info(state["current"], s)
        except OSError:
            out["release"] = None
    for name, port in ((PUBLIC, s.bento_port), (CANDIDATE, s.bento_staging_port)):
        svc = _named(name, port, s)
        pid = svcs._read_pid(svc, s)
        info: dict[str, Any] = {"pid": pid, "url": s.url(port), "ready": False}
        if pid:
            try:
                r = httpx.get(s.url(port, "/info"), timeout=3.0)
                info["ready"] = r.status_code == 200
                info["versions"] = r.json().get("versions") if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                pass
        out[name] = info
    return out
