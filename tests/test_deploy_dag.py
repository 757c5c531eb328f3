"""The ``demo_world`` and ``deploy_bento`` DAGs through ``dag.test()``: the world is written
with its contact sheet and Asset event; a deploy whose candidate fails its smoke test takes
the same failure path as ``tailor deploy run`` (candidate stopped, ``deploy_failed`` with
the stage recorded, lease free), the ``cleanup`` task fails the run, and no Asset event
says a deployment happened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import assets
from pipelines.services import free_port
from pipelines.settings import Settings
from tests.airflow_harness import events_of, isolated_airflow, run_dag_test
from tests.helpers.serving import broken_copy


def test_demo_world_dag_writes_the_world_and_its_contact_sheet(tmp_path: Path) -> None:
    env = isolated_airflow(tmp_path, tmp_path / "proj")
    out = tmp_path / "proj" / "var" / "worlds" / "small"  # a run may write under data/ and var/ only
    res = run_dag_test(env, "demo_world", {"seed": 3, "products": 24, "scenes": 4, "out": str(out)}, cwd=tmp_path)
    assert res["state"] == "success", res["log"][-3000:]
    assert res["tis"] == {"generate": "success", "contact_sheet": "success"}
    meta = json.loads((out / "world.json").read_text())
    assert meta["counts"]["products"] == 24 and meta["config"]["seed"] == 3
    assert (out / "preview.png").stat().st_size > 1000
    assert len(events_of(res, assets.DEMO_WORLD)) == 1


def test_a_bad_parameter_fails_the_task_at_once_without_retries(tmp_path: Path) -> None:
    env = isolated_airflow(tmp_path, tmp_path / "proj")
    res = run_dag_test(env, "demo_world", {"out": str(tmp_path / "elsewhere")}, cwd=tmp_path, timeout_s=240)
    assert res["state"] == "failed" and res["tis"]["generate"] == "failed", res["tis"]
    assert "outside the roots a run may use" in res["log"]
    assert "up_for_retry" not in res["log"]  # generate has retries=2, each after a 5-minute delay


@pytest.mark.services
@pytest.mark.slow
def test_a_failed_deploy_leaves_the_same_state_from_the_dag_and_the_cli(
    tmp_path: Path, serve_bundle: Path, small_world: Path
) -> None:
    from pipelines.deploy import lease, release
    from pipelines.deploy.stages import DeployFailed, deploy

    root = tmp_path / "proj"
    ports = {
        "TAILOR_BENTO_PORT": free_port(),
        "TAILOR_BENTO_STAGING_PORT": free_port(),
        "TAILOR_BENTO_ALT_PORT": free_port(),
    }
    world = {"TAILOR_WORLDS_DIR": str(small_world.parent), "TAILOR_DEMO_WORLD": small_world.name}
    env = isolated_airflow(tmp_path, root, **{k: str(v) for k, v in ports.items()}, **world)
    s = Settings(
        root=root,
        data_dir=root / "data",
        var_dir=root / "var",
        mlflow_dir=root / "mlflow",
        worlds_dir=small_world.parent,
        demo_world=small_world.name,
        bento_port=ports["TAILOR_BENTO_PORT"],
        bento_staging_port=ports["TAILOR_BENTO_STAGING_PORT"],
        bento_alt_port=ports["TAILOR_BENTO_ALT_PORT"],
    )
    bad = broken_copy(serve_bundle, root / "var" / "bad", "broken-index")  # a run reads under data/ and var/

    def failure_state() -> tuple[dict, dict]:
        st = release.status(s)
        return st["last_events"][-1], {slot: st[f"bento-{slot}"]["pid"] for slot in ("a", "b")}

    try:
        res = run_dag_test(env, "deploy_bento", {"bundle": str(bad), "build": False}, cwd=tmp_path)
        assert res["state"] == "failed", res["log"][-3000:]
        assert res["tis"]["smoke"] == "failed" and res["tis"]["switch"] == "upstream_failed", res["tis"]
        assert res["tis"]["cleanup"] == "failed" and res["tis"]["candidate"] == "success"
        assert events_of(res, assets.DEPLOYMENT) == []
        dag_event, dag_pids = failure_state()
        assert dag_event["event"] == "deploy_failed" and dag_event["stage"] == "smoke", dag_event
        assert dag_event["reason"], dag_event
        assert dag_pids == {"a": None, "b": None}  # the candidate was stopped
        assert lease.holder(s) is None
        assert release.status(s)["current"] is None  # nothing was switched to

        with pytest.raises(DeployFailed, match="stage 'smoke'"):
            deploy({"bundle": str(bad)}, build=False, s=s, world=small_world)
        cli_event, cli_pids = failure_state()
        assert {k: v for k, v in cli_event.items() if k != "at"} == {k: v for k, v in dag_event.items() if k != "at"}
        assert cli_pids == dag_pids and lease.holder(s) is None
    finally:
        release.stop_all(s)
