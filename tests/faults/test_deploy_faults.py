"""Fault suite, deploy side (issue 14): a deploy killed mid-switch, two deploys at once and
a rollback during a deploy, and a champion whose artifact was replaced by a pickle that
would run code.

After each: the public endpoint answered every poll (GET /info every 100 ms) with a 200,
what serves agrees with ``var/deploy/state.json`` (after ``tailor up`` for the kill), and
nothing ran.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from pipelines import registry
from pipelines.settings import PROJECT_ROOT, Settings
from tests.helpers import wait_until
from tests.helpers.registry import FakeTrainResult, gate_metrics, hostile_pickle
from tests.helpers.serving import broken_copy, polled, served_versions

pytestmark = [pytest.mark.faults]

_DEPLOY = """
import json, sys
from pathlib import Path
from pipelines.deploy.stages import deploy
from pipelines.settings import Settings
deploy({"bundle": sys.argv[2]}, build=False, s=Settings(**json.loads(sys.argv[1])), world=Path(sys.argv[3]))
"""


@pytest.mark.services
@pytest.mark.slow
def test_a_deploy_killed_mid_switch(
    dsettings: Settings,
    serve_bundle: Path,
    small_world: Path,
    tmp_path: Path,
) -> None:
    """SIGKILL the deploying process once the gateway has moved to its candidate (before the
    state file says so): the public port answers throughout, `tailor up` makes what serves
    and what the state records agree, and the dead holder's lease does not block the next
    deploy."""
    from pipelines.deploy import release
    from pipelines.deploy.stages import deploy

    s = dsettings
    try:
        deploy({"bundle": str(serve_bundle)}, build=False, s=s, world=small_world)
        before = release.status(s)
        old_url = before["gateway"]["upstream"]
        other = broken_copy(serve_bundle, tmp_path / "other", "index-other")
        shutil.copy2(serve_bundle / "index" / "vectors.npy", other / "index" / "vectors.npy")
        settings = {
            "root": str(s.root),
            "var_dir": str(s.var_dir),
            "bentoml_home": str(s.bentoml_home),
            "bento_port": s.bento_port,
            "bento_staging_port": s.bento_staging_port,
            "bento_alt_port": s.bento_alt_port,
        }
        with polled(s) as seen:
            child = subprocess.Popen(
                [sys.executable, "-c", _DEPLOY, json.dumps(settings), str(other), str(small_world)],
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
            moved, deadline = False, time.time() + 600
            while time.time() < deadline and child.poll() is None:
                try:
                    gw = httpx.get(s.url(s.bento_port, "/-/gateway"), timeout=5).json()
                except httpx.HTTPError:
                    gw = {}
                if gw.get("upstream") and gw["upstream"] != old_url:
                    moved = True
                    break
                time.sleep(0.02)
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            assert moved, "the deploy ended before its switch could be interrupted"
            back = release.ensure_serving(s)  # what `tailor up` does
            time.sleep(0.5)
        assert set(seen) == {200}, seen
        st = release.status(s)
        assert st["gateway"]["upstream"] == st[f"bento-{st['live_slot']}"]["url"], (back, st)
        assert served_versions(s) == release.release_info(st["current"], s)["versions"]
        # the killed holder's lease ended with it: the next deploy goes ahead
        again = deploy({"bundle": str(other)}, build=False, s=s, world=small_world)
        assert served_versions(s)["index"] == "index-other" and release.status(s)["current"] == again["id"]
    finally:
        release.stop_all(s)


@pytest.mark.services
@pytest.mark.slow
def test_concurrent_deploys_and_a_rollback_during_a_deploy_take_turns(
    dsettings: Settings,
    serve_bundle: Path,
    small_world: Path,
    tmp_path: Path,
):
    """Two deploys started together both succeed, one after the other (the lease); a
    rollback asked for during a deploy waits for it, then undoes it. The public port keeps
    answering the release the state file names."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.deploy import lease, release
    from pipelines.deploy.stages import deploy

    s = dsettings
    a = broken_copy(serve_bundle, tmp_path / "a", "index-a")
    b = broken_copy(serve_bundle, tmp_path / "b", "index-b")
    for d in (a, b):  # working copies: the same vectors as the served bundle
        shutil.copy2(serve_bundle / "index" / "vectors.npy", d / "index" / "vectors.npy")
    try:
        with ThreadPoolExecutor(2) as pool:
            fa = pool.submit(deploy, {"bundle": str(a)}, False, s, small_world)
            wait_until(lambda: lease.holder(s), what="the first deploy to take the lease")
            fb = pool.submit(deploy, {"bundle": str(b)}, False, s, small_world)
            ra, rb = fa.result(timeout=900), fb.result(timeout=900)
        switched = [e for e in release.read_state(s)["events"] if e["event"] == "switched"]
        assert [e["release"] for e in switched[-2:]] == [ra["id"], rb["id"]]
        assert release.status(s)["current"] == rb["id"] and served_versions(s)["index"] == "index-b"

        with polled(s) as seen, ThreadPoolExecutor(1) as pool:
            fc = pool.submit(deploy, {"bundle": str(a)}, False, s, small_world)
            wait_until(lambda: lease.holder(s), what="the deploy to take the lease")
            back = release.rollback(s)  # waits for it, then undoes it
            rc = fc.result(timeout=900)
        assert set(seen) == {200}, seen  # no gap through a deploy and a rollback
        kinds = [e["event"] for e in release.read_state(s)["events"]]
        assert kinds[-2:] == ["switched", "rolled_back"]
        assert back["previous"] == rc["id"] and back["current"] == rb["id"]
        assert served_versions(s)["index"] == "index-b"
    finally:
        release.stop_all(s)


# ------------------------------------------------------ a champion replaced by a hostile pickle
def test_registered_models_load_weights_only_and_refuse_a_replaced_artifact(
    mlflow_store: Settings,
    tiny_training_set: Path,
    tmp_path: Path,
) -> None:
    """The champion's artifacts are overwritten with pickles that would run code: the pickle
    flavour is never read, and the weights file no longer matches the hash recorded at
    registration, so nothing loads and nothing runs."""
    from mlflow import MlflowClient

    from models import checkpoint
    from pipelines.train import build_model, model_config

    cfg = model_config("tagger", "demo")
    model = build_model("tagger", cfg).eval()
    res = FakeTrainResult(model=model, metrics=gate_metrics(0.6), config=cfg, input_example=None)
    info = registry.log_training_run("tagger", res, tiny_training_set, "snap-1", s=mlflow_store)
    uri = info["model_uri"]
    loaded = registry.load_version(uri, s=mlflow_store)
    assert type(loaded) is type(model)
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )

    run_dir = Path(
        MlflowClient(tracking_uri=mlflow_store.mlflow_tracking_uri)
        .get_run(info["run_id"])
        .info.artifact_uri.removeprefix("file://")
    )
    marker = tmp_path / "pwned"
    flavour = list(run_dir.parent.parent.rglob("model.pth"))  # the pickle flavour: replaced, and never read
    assert flavour
    for pth in flavour:
        hostile_pickle(pth, marker)
    assert type(registry.load_version(uri, s=mlflow_store)) is type(model)
    hostile_pickle(run_dir / registry.WEIGHTS_DIR / checkpoint.FILE, marker)
    with pytest.raises(checkpoint.UntrustedModel, match="replaced after registration"):
        registry.load_version(uri, s=mlflow_store)
    import pickle

    with pytest.raises(pickle.UnpicklingError):  # and with no hash to compare, weights_only still refuses it
        checkpoint.load(run_dir / registry.WEIGHTS_DIR / checkpoint.FILE)
    assert not marker.exists()
