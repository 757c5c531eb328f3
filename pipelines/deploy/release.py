"""Releases of the search Bento: build -> candidate in the idle slot -> smoke -> switch (no gap).

A release is a directory ``var/deploy/releases/<id>/`` with ``bundle/`` (the exact models
and index), ``ctx/`` (the Bento's build context) and ``release.json`` (id, Bento tag,
versions). ``var/deploy/state.json`` records the current release and the ones before it.

The public port (``bento_port``, 3000) belongs to the gateway (:mod:`.gateway`), a small
reverse proxy. Behind it two slots each run at most one ``bentoml serve`` (``bento-a`` on
``bento_staging_port``, ``bento-b`` on ``bento_alt_port``), started through
:mod:`pipelines.services` mechanics (detached process group, pid file and log under
``var/run``, health wait). A candidate starts in the idle slot and is smoke-tested there;
the switch points the gateway at it (one atomic file rewrite), lets the requests still on
the old slot finish, then stops the old slot. The public port is never unbound, and a
switch or rollback that fails before the rewrite leaves the previous release serving
untouched (recorded as an event). ``state.json`` names the live slot; ``tailor up``
(:func:`ensure_serving`) brings the current release and the gateway back after a reboot.

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

GATEWAY = "gateway"
SLOTS = ("a", "b")
#: process names of the layout before the gateway (a public server on 3000, a candidate
#: on 3001): stopped, never started, so an upgrade frees their ports
LEGACY = ("bento", "bento-candidate")
#: longest a switch waits for the old slot's requests in flight before stopping it
DRAIN_S = 60.0


# --------------------------------------------------------------------------- layout / state
def deploy_dir(s: Settings | None = None) -> Path:
    """``var/deploy``: releases and ``state.json``."""
    s = s or get_settings()
    return s.deploy_dir


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
    state.setdefault("events", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": kind, **info}
    )
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


def server_service(
    name: str, release: dict[str, Any], port: int, s: Settings, startup_timeout_s: float = 300.0
) -> svcs.Service:
    """The :class:`pipelines.services.Service` running ``release`` on ``port``.

    A release with a Bento tag serves the built Bento; one without (``build=False``) serves
    ``bentos.service:Tailor`` from the source tree with the release's bundle.
    """
    target = release.get("bento") or "bentos.service:Tailor"
    argv = [svcs._bin("bentoml"), "serve", target, "--host", s.host, "--port", str(port)]
    return svcs.Service(
        name=name,
        argv=argv,
        port=port,
        health_path="/readyz",
        env=_bento_env(s, release["bundle"]),
        startup_timeout_s=startup_timeout_s,
    )


def start_service(svc: svcs.Service, s: Settings) -> dict[str, Any]:
    """Start ``svc`` detached and wait until ready; refuses one that already runs."""
    return svcs.start(svc, s, already_running_ok=False)


def stop_service(svc: svcs.Service, s: Settings, timeout_s: float = 30.0) -> bool:
    """Stop ``svc``'s process group (SIGTERM, then SIGKILL); False when it was not running."""
    return svcs.stop(svc, s, timeout_s=timeout_s)


def _named(name: str, port: int, s: Settings) -> svcs.Service:
    """A Service handle for stopping/inspecting by name (argv unused)."""
    return svcs.Service(name=name, argv=[], port=port, health_path="/readyz")


def slot_port(slot: str, s: Settings) -> int:
    """The internal port of Bento slot ``a`` or ``b``."""
    return {"a": s.bento_staging_port, "b": s.bento_alt_port}[slot]


def _slot_service(slot: str, s: Settings) -> svcs.Service:
    return _named(f"bento-{slot}", slot_port(slot, s), s)


def slot_pid(slot: str, s: Settings) -> int | None:
    """The pid of the Bento server running in ``slot`` (None: nothing runs there)."""
    return svcs._read_pid(_slot_service(slot, s), s)


def _slot_running(slot: str, s: Settings) -> bool:
    return slot_pid(slot, s) is not None


def live_slot(state: dict[str, Any]) -> str | None:
    """The slot the gateway sends traffic to, per ``state.json`` (None: nothing deployed)."""
    return state.get("live_slot") if state.get("current") else None


def idle_slot(state: dict[str, Any]) -> str:
    """The slot a candidate starts in: the one not live."""
    return "b" if live_slot(state) == "a" else "a"


def upstream_file(s: Settings) -> Path:
    """The file the gateway reads its upstream from (:func:`.gateway.write_upstream`)."""
    return deploy_dir(s) / "upstream.json"


def gateway_service(s: Settings) -> svcs.Service:
    """The gateway on the public port."""
    import sys

    argv = [
        sys.executable,
        "-m",
        "pipelines.deploy.gateway",
        "--host",
        s.host,
        "--port",
        str(s.bento_port),
        "--upstream-file",
        str(upstream_file(s)),
    ]
    return svcs.Service(
        name=GATEWAY,
        argv=argv,
        port=s.bento_port,
        health_path="/-/gateway",
        env={"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))},
        startup_timeout_s=60.0,
    )


def ensure_gateway(s: Settings) -> None:
    """Start the gateway on the public port unless it runs (stopping a pre-gateway public server)."""
    for name in LEGACY:
        stop_service(_named(name, s.bento_port, s), s)
    svcs.start(gateway_service(s), s, already_running_ok=True)


def _gateway_status(s: Settings) -> dict[str, Any] | None:
    try:
        r = httpx.get(s.url(s.bento_port, "/-/gateway"), timeout=5.0)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _point_gateway(
    slot: str, release_id: str, s: Settings, expect_versions: dict | None = None, wait_s: float = 30.0
) -> None:
    """Rewrite the upstream file to ``slot``; return once the public port answers from it."""
    from .gateway import write_upstream

    url = s.url(slot_port(slot, s))
    write_upstream(upstream_file(s), url, release_id)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        gw = _gateway_status(s)
        if gw and gw.get("upstream") == url:
            if expect_versions is None:
                return
            try:
                info = httpx.get(s.url(s.bento_port, "/info"), timeout=10.0).json()
            except (httpx.HTTPError, ValueError):
                info = {}
            if info.get("versions") == expect_versions:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not move to slot {slot} ({url}) within {wait_s:.0f}s")


def _drain_and_stop(slot: str, s: Settings, wait_s: float = DRAIN_S) -> None:
    """Wait until no request is in flight to ``slot`` through the gateway, then stop it."""
    url = s.url(slot_port(slot, s))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        gw = _gateway_status(s)
        if gw is None or not gw.get("in_flight", {}).get(url):
            break
        time.sleep(0.1)
    stop_service(_slot_service(slot, s), s)


def stop_all(s: Settings | None = None) -> dict[str, bool]:
    """Stop the gateway and both slots (``tailor down``); name -> whether it was running."""
    s = s or get_settings()
    out = {GATEWAY: stop_service(_named(GATEWAY, s.bento_port, s), s)}
    for slot in SLOTS:
        out[f"bento-{slot}"] = stop_service(_slot_service(slot, s), s)
    for name in LEGACY:
        stop_service(_named(name, s.bento_port, s), s)
    return out


# --------------------------------------------------------------------------- stages
def new_release(bundle_info: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Create ``releases/<id>/`` and move (or copy) the bundle into it."""
    s = s or get_settings()
    rid = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{bundle_info.get('id', 'x')[:8]}"
    rdir = deploy_dir(s) / "releases" / rid
    rdir.mkdir(parents=True, exist_ok=False)
    shutil.copytree(bundle_info["bundle"], rdir / "bundle")
    info = {
        "id": rid,
        "dir": str(rdir),
        "bundle": str(rdir / "bundle"),
        "versions": bundle_info["versions"],
        "bento": None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
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
    env = {
        **os.environ,
        **svcs.NO_USAGE_DATA,
        "BENTOML_HOME": str(s.bentoml_home),
        "TAILOR_BUNDLE_DIR": str(ctx / "bentos" / "bundle"),
    }
    Path(s.bentoml_home).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [svcs._bin("bentoml"), "build", "-f", "bentos/bentofile.yaml", "--output", "tag", "."],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
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


def start_candidate(release: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Start ``release`` in the idle slot (stopping a leftover there first); the result
    carries ``slot`` and ``candidate_url``."""
    s = s or get_settings()
    slot = idle_slot(read_state(s))
    stop_service(_slot_service(slot, s), s)
    start_service(server_service(f"bento-{slot}", release, slot_port(slot, s), s), s)
    return {**release, "slot": slot, "candidate_url": s.url(slot_port(slot, s))}


def record_failure(stage: str, reason: str, s: Settings | None = None) -> None:
    """Add a ``deploy_failed`` event (the stage and the reason) to the deploy state."""
    s = s or get_settings()
    state = read_state(s)
    _event(state, "deploy_failed", stage=stage, reason=reason[:500])
    _write_state(state, s)


def stop_candidate(s: Settings | None = None) -> bool:
    """Stop the idle slot's server (a candidate that will not be switched to), if any."""
    s = s or get_settings()
    return stop_service(_slot_service(idle_slot(read_state(s)), s), s)


def _go_live(release: dict[str, Any], s: Settings, event: str, **info: Any) -> str | None:
    """Make ``release`` (running, or started here, in the idle slot) the live one with no gap.

    Order: candidate answers ``/search`` -> gateway moved to it (public ``/info`` shows its
    versions) -> ``state.json`` -> the old slot drained and stopped. A failure before the
    gateway moved stops the candidate and leaves the old slot serving untouched; a failure
    while moving points the gateway back. Returns the previous release id.
    """
    state = read_state(s)
    previous, old_slot = state.get("current"), live_slot(state)
    slot = idle_slot(state)
    if release.get("slot") != slot or not _slot_running(slot, s):
        release = start_candidate(release, s)  # not started by a candidate stage (a bare switch)
    if not _search_ok(s.url(slot_port(slot, s))):
        raise RuntimeError(f"release {release['id']} answers /readyz but not /search in slot {slot}")
    ensure_gateway(s)
    try:
        _point_gateway(slot, release["id"], s, expect_versions=release.get("versions"))
    except Exception:
        if old_slot and _slot_running(old_slot, s):
            _point_gateway(old_slot, str(previous), s)
        raise
    state = read_state(s)
    state["current"], state["live_slot"] = release["id"], slot
    _event(state, event, release=release["id"], previous=previous, slot=slot, **info)
    _write_state(state, s)
    if old_slot and old_slot != slot:
        _drain_and_stop(old_slot, s)
    return previous


def switch(release: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Serve ``release`` on the public port with no gap (see :func:`_go_live`).

    Raises RuntimeError when it does not become live; the previous release then keeps
    serving, and the failure is recorded as a ``switch_failed`` event.
    """
    s = s or get_settings()
    state = read_state(s)
    previous = state.get("current")
    try:
        _go_live(release, s, "switched", versions=release.get("versions"))
    except Exception as exc:
        stop_candidate(s)
        state = read_state(s)
        serving = previous if previous and _slot_running(str(live_slot(state)), s) else None
        _event(state, "switch_failed", release=release["id"], serving=serving, reason=str(exc)[:500])
        _write_state(state, s)
        raise RuntimeError(
            f"switch to {release['id']} failed; "
            f"{'still serving ' + serving if serving else 'nothing was serving'}: {exc}"
        ) from exc
    state = read_state(s)
    if previous:
        state.setdefault("history", []).append(previous)
        _write_state(state, s)
    return {**release, "url": s.url(s.bento_port), "previous": previous}


def _search_ok(url: str) -> bool:
    """One tiny search on ``url`` (the switch's own check; the full smoke ran before)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 80, 80)).save(buf, "JPEG")
    try:
        r = httpx.post(
            f"{url}/search", files={"image": ("x.jpg", buf.getvalue(), "image/jpeg")}, data={"k": "1"}, timeout=60
        )
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
    try:
        _go_live(release_info(target, s), s, "rolled_back")
    except Exception as exc:
        stop_candidate(s)
        state = read_state(s)
        _event(state, "rollback_failed", target=target, serving=current, reason=str(exc)[:500])
        _write_state(state, s)
        raise RuntimeError(f"rollback to {target} failed; still serving {current}: {exc}") from exc
    state = read_state(s)
    state["history"] = state["history"][:-1]
    _write_state(state, s)
    return {"current": target, "previous": current, "url": s.url(s.bento_port)}


def ensure_serving(s: Settings | None = None) -> dict[str, Any] | None:
    """Bring the recorded current release back when it is not running (after a reboot, a
    crash or a deploy killed mid-switch): its slot's server, the gateway, and the gateway
    pointed at that slot. Returns what was started (None when everything already ran)."""
    s = s or get_settings()
    state = read_state(s)
    if not state.get("current"):
        return None
    slot = live_slot(state) or "a"
    started: dict[str, Any] = {}
    if not _slot_running(slot, s):
        started[f"bento-{slot}"] = start_service(
            server_service(f"bento-{slot}", release_info(state["current"], s), slot_port(slot, s), s), s
        )
    if svcs._read_pid(_named(GATEWAY, s.bento_port, s), s) is None:
        ensure_gateway(s)
        started[GATEWAY] = True
    from .gateway import read_upstream

    if read_upstream(upstream_file(s)).get("url") != s.url(slot_port(slot, s)):
        _point_gateway(slot, state["current"], s)
        started["upstream"] = s.url(slot_port(slot, s))
    if state.get("live_slot") != slot:
        state["live_slot"] = slot
        _write_state(state, s)
    return started or None


def status(s: Settings | None = None) -> dict[str, Any]:
    """Current release, versions, the gateway, what answers in each slot, history."""
    s = s or get_settings()
    state = read_state(s)
    out: dict[str, Any] = {
        "current": state.get("current"),
        "history": state.get("history", []),
        "last_events": state.get("events", [])[-5:],
    }
    if state.get("current"):
        try:
            out["release"] = release_info(state["current"], s)
        except OSError:
            out["release"] = None
    out["live_slot"] = live_slot(state)
    gw = _gateway_status(s)
    out[GATEWAY] = {
        "pid": svcs._read_pid(_named(GATEWAY, s.bento_port, s), s),
        "url": s.url(s.bento_port),
        "upstream": (gw or {}).get("upstream"),
        "in_flight": (gw or {}).get("in_flight"),
    }
    for slot in SLOTS:
        port = slot_port(slot, s)
        pid = slot_pid(slot, s)
        info: dict[str, Any] = {"pid": pid, "url": s.url(port), "ready": False}
        if pid:
            try:
                r = httpx.get(s.url(port, "/info"), timeout=3.0)
                info["ready"] = r.status_code == 200
                info["versions"] = r.json().get("versions") if r.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                pass
        out[f"bento-{slot}"] = info
    return out
