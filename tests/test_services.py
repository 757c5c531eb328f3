"""`tailor up` / `tailor down` against the real servers on free loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines import services
from pipelines.services import free_port
from pipelines.settings import PROJECT_ROOT, Settings
from tests.helpers import wait_until

pytestmark = pytest.mark.services


@pytest.fixture()
def isolated(tmp_path, monkeypatch) -> Settings:
    """Settings whose state and ports are private to this test, exported for the CLI too."""
    env = {
        "TAILOR_VAR_DIR": str(tmp_path / "var"),
        "TAILOR_MLFLOW_DIR": str(tmp_path / "mlflow"),
        "TAILOR_AIRFLOW_PORT": str(free_port()),
        "TAILOR_MLFLOW_PORT": str(free_port()),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    yield s
    for name in ("airflow", "mlflow"):
        services.stop(name, s)


def _tailor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=os.environ.copy(),
        timeout=400,
    )


def test_up_twice_then_down_twice(isolated: Settings) -> None:
    s = isolated
    first = _tailor("up")
    assert first.returncode == 0, first.stderr + first.stdout
    assert f"http://127.0.0.1:{s.airflow_port}" in first.stdout
    assert "simple_auth_manager_passwords.json.generated" in first.stdout

    # The Airflow REST API answers with the project's DAGs (dags folder = dags/, no examples).
    users = json.loads(services.airflow_password_file(s).read_text())
    token = httpx.post(
        s.url(s.airflow_port, "/auth/token"), json={"username": "admin", "password": users["admin"]}, timeout=30
    ).json()["access_token"]
    dag_ids: list[str] = []
    for _ in range(60):  # the dag-processor parses dags/ shortly after start-up
        r = httpx.get(s.url(s.airflow_port, "/api/v2/dags"), headers={"Authorization": f"Bearer {token}"}, timeout=30)
        dag_ids = [d["dag_id"] for d in r.json()["dags"]]
        if "demo_world" in dag_ids:
            break
        time.sleep(2)
    assert "demo_world" in dag_ids and not any(d.startswith("example_") for d in dag_ids)
    # the one-slot pool the DVC-committing tasks queue in exists (else they never run)
    from pipelines.pools import DVC_POOL

    pool = httpx.get(
        s.url(s.airflow_port, f"/api/v2/pools/{DVC_POOL}"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert pool.status_code == 200 and pool.json()["slots"] == 1, pool.text
    # the training pool is sized where the tasks run (Settings.train_slots), not in the DAG file
    from pipelines.pools import TRAIN_POOL

    pool = httpx.get(
        s.url(s.airflow_port, f"/api/v2/pools/{TRAIN_POOL}"), headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert pool.status_code == 200 and pool.json()["slots"] == s.train_slots, pool.text
    assert httpx.get(s.url(s.mlflow_port, "/health"), timeout=10).text.strip() == "OK"

    pids = {n: info["pid"] for n, info in services.status(s).items() if info["pid"]}
    second = _tailor("up")
    assert second.returncode == 0 and second.stdout.count("already running") == 2
    assert {n: info["pid"] for n, info in services.status(s).items() if info["pid"]} == pids

    down = _tailor("down")
    assert down.returncode == 0 and "airflow: stopped" in down.stdout
    assert not services.port_in_use(s.host, s.airflow_port)
    assert not services.port_in_use(s.host, s.mlflow_port)
    again = _tailor("down")
    assert again.returncode == 0 and "airflow: not running" in again.stdout


def test_port_taken_by_a_stranger_is_reported(isolated: Settings) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind((isolated.host, isolated.mlflow_port))
        sock.listen()
        with pytest.raises(RuntimeError, match="already in use by a process Tailor did not start"):
            services.start("mlflow", isolated)


def test_usage_data_is_off_in_every_process_tailor_starts(tmp_path) -> None:
    """Each library's own switch, resolved in a process started with a service's environment
    (a parent that asked for telemetry does not turn it back on)."""
    from pipelines.deploy.release import _bento_env

    s = Settings(root=tmp_path)
    probe = (
        "import json, mlflow.telemetry.utils as mt, dvc.analytics as da\n"
        "from bentoml._internal.utils.analytics.usage_stats import do_not_track\n"
        "print(json.dumps({'mlflow_off': bool(mt.is_telemetry_disabled()), 'dvc_on': da.is_enabled(),\n"
        "                  'bentoml_off': do_not_track()}))\n"
    )
    noisy = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "false",
        "DO_NOT_TRACK": "false",
        "BENTOML_DO_NOT_TRACK": "false",
        "CI": "",
        "DVC_TEST": "",
        "PYTEST_CURRENT_TEST": "",
    }
    envs = {name: services.service_env(svc, noisy) for name, svc in services.services(s).items()}
    envs["bento"] = {**noisy, **_bento_env(s, str(tmp_path / "bundle"))}
    envs["airflow tasks"] = {**noisy, **services.airflow_env(s)}
    for name, env in envs.items():
        for k, v in services.NO_USAGE_DATA.items():
            assert env[k] == v, (name, k)
        # MLflow treats CI / pytest runs as "off" anyway: clear those markers for an honest probe
        env = {k: v for k, v in env.items() if k not in ("CI", "PYTEST_CURRENT_TEST", "DVC_TEST")}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got == {"mlflow_off": True, "dvc_on": False, "bentoml_off": True}, (name, got)


def test_a_reused_pid_is_never_signalled(tmp_path) -> None:
    """A pid file whose number now belongs to another process (a reboot, a crash and pid
    reuse) must not make `tailor down` kill that process; a bare number is not trusted either."""
    s = Settings(root=tmp_path)
    s.ensure_dirs()
    svc = services.services(s)["report"]
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        for stale in (
            str(bystander.pid),  # the old format: a bare number
            json.dumps({"pid": bystander.pid, "start_time": 1_000_000.0}),
        ):  # someone else's start
            svc.pid_file(s).write_text(stale)
            assert services.status(s)["report"]["pid"] is None
            assert services.stop(svc, s) is False
            time.sleep(0.3)
            assert bystander.poll() is None, "the bystander was signalled"
        services.write_pid_file(svc.pid_file(s), bystander.pid)  # really ours: recognised, stopped
        assert services.status(s)["report"]["pid"] == bystander.pid
        assert services.stop(svc, s, timeout_s=5) is True
        assert bystander.wait(timeout=10) is not None
    finally:
        if bystander.poll() is None:
            bystander.kill()


def test_runtime_state_is_private_to_the_operator(tmp_path) -> None:
    """var/ and mlflow/ are 0700; a service's log and the files it writes are 0600 (the
    Airflow admin password is generated into both), whatever umask the caller had."""
    import stat

    s = Settings(root=tmp_path)
    old = os.umask(0o022)
    try:
        s.ensure_dirs()
        port = free_port()
        code = (
            "import http.server, socketserver, sys; open('written-by-service.txt', 'w').write('secret'); "
            f"socketserver.TCPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
        )
        svc = services.Service(
            name="probe", argv=[sys.executable, "-c", code], port=port, health_path="/", startup_timeout_s=60
        )
        services.start(svc, s)
        try:
            mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
            assert mode(s.var_dir) == 0o700 and mode(s.mlflow_dir) == 0o700
            assert mode(svc.log_file(s)) == 0o600
            assert mode(s.root / "written-by-service.txt") == 0o600
        finally:
            services.stop(svc, s, timeout_s=5)
    finally:
        os.umask(old)


def test_cluster_groups_and_stop_order(tmp_path: Path) -> None:
    """In the cluster profile `airflow`/`mlflow` stand for their servers (workers included);
    `tailor down` stops Airflow before the stores it writes to, whichever profile is on."""
    from pipelines import services
    from pipelines.settings import Settings

    c = Settings(root=tmp_path, profile="cluster", celery_workers=3)
    names = services.expand(["mlflow", "airflow"], c)
    assert names[:3] == ["postgres", "s3", "mlflow"]
    assert names[-3:] == ["airflow-worker-1", "airflow-worker-2", "airflow-worker-3"]
    assert "airflow" not in services.services(c)  # not standalone
    env = services.services(c)["airflow-worker-2"].env
    assert env["TAILOR_WORKER_NAME"] == "tailor-worker-2" and env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == c.airflow_db_url
    # no password on any command line
    secret = str(c.airflow_db_url).split(":")[2].split("@")[0]
    assert all(secret not in " ".join(svc.argv) for svc in services.services(c).values())
    e = Settings(root=tmp_path / "e")
    assert services.expand(["airflow"], e) == ["airflow"]
    stopped = services.stop_everything(e)  # nothing runs: every name reported, none stopped
    order = list(stopped)
    assert not any(stopped.values())
    assert (
        order.index("airflow-worker-1") < order.index("airflow-api") < order.index("mlflow") < order.index("postgres")
    )
    assert order.index("airflow") < order.index("postgres")


def test_stop_leaves_no_member_of_the_group_behind(tmp_path) -> None:
    """A service whose launcher exits at once on SIGTERM while a member of its group ignores
    it (an Airflow scheduler stuck in its shutdown): stop waits for the whole group and
    SIGKILLs what is left, so `tailor down` leaves nothing running."""
    s = Settings(root=tmp_path)
    s.ensure_dirs()
    port = free_port()
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    code = (
        "import http.server, socketserver, subprocess, sys; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}]); open('member.pid', 'w').write(str(p.pid)); "
        f"socketserver.TCPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    svc = services.Service(name="probe", argv=[sys.executable, "-c", code], port=port, health_path="/")
    services.start(svc, s)
    member = int(wait_until(lambda: (s.root / "member.pid").exists() and (s.root / "member.pid").read_text()))
    assert services.pid_alive(member)
    assert services.stop(svc, s, timeout_s=1.0) is True
    assert not services.pid_alive(member), "a member of the service's process group survived stop"
