"""Start and stop Tailor's long-running services on loopback.

``tailor up`` starts, in the embedded default, ``airflow standalone`` (SQLite +
LocalExecutor, dags folder ``dags/``, examples off) and an ``mlflow server``; in the cluster
profile (``TAILOR_PROFILE=cluster``) the same two names stand for the groups of real
servers in :data:`CLUSTER_GROUPS` (Postgres, Redis, an S3-compatible store, the Airflow
components and two Celery workers: pipelines/cluster.py). ``tailor mall serve`` can run the
demo malls in the background the same way. Each service runs detached in its own process group with a pid
file and a log under ``var/run``; starting a running service or stopping a stopped one is
a no-op, and a port held by some other process is reported instead of silently reused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psutil

from pipelines import cluster
from pipelines.pools import DVC_POOL, TRAIN_POOL
from pipelines.settings import Settings, get_settings


@dataclass(frozen=True)
class Service:
    """One background process: how to launch it and how to tell it is ready."""

    name: str
    argv: list[str]
    port: int | None
    health_path: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 240.0
    # commands run to completion (same env and umask) before the service is launched
    prepare: tuple[tuple[str, ...], ...] = ()
    # how readiness is told: an HTTP answer below 500 on health_path, a TCP accept on the
    # port, or (no port: Celery workers, the scheduler) the process still alive after a pause
    health: Literal["http", "tcp", "process"] = "http"
    # Python steps around the launch (given the settings): before it (initdb) and once the
    # service is ready (create the databases, the bucket)
    before: Callable[[Settings], None] | None = None
    after: Callable[[Settings], None] | None = None
    stop_signal: int = signal.SIGTERM

    def pid_file(self, s: Settings) -> Path:
        return Path(s.run_dir) / f"{self.name}.pid"

    def log_file(self, s: Settings) -> Path:
        return Path(s.run_dir) / f"{self.name}.log"


def _bin(name: str) -> str:
    """Path of a console script installed next to the running interpreter (the venv)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


#: Usage-data (telemetry) switches, off in every process Tailor starts and in the CLI itself:
#: MLflow (client and server, on by default since 3.2; it also honours DO_NOT_TRACK), BentoML,
#: DVC and Great Expectations. Airflow 3 collects none (Scarf was removed, apache/airflow#45865).
NO_USAGE_DATA: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def service_env(svc: Service, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a service process starts with: ``base`` (default: ours), the service's
    own variables, usage data off, and the venv's tools first on PATH (airflow standalone
    spawns ``airflow ...`` children)."""
    base = dict(os.environ if base is None else base)
    path = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    return {**base, **svc.env, **NO_USAGE_DATA, "PATH": path}


def airflow_env(s: Settings) -> dict[str, str]:
    """Environment that points Airflow at the project (also used by tests and the CLI)."""
    port = s.airflow_port
    return {
        "AIRFLOW_HOME": str(s.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(s.dags_dir),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": str(s.airflow_executor),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": str(s.airflow_db_url),
        "AIRFLOW__API__HOST": s.host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://{s.host}:{port}",
        # Task processes talk back to the api-server: keep that on the same loopback port.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{s.host}:{port}/execution/",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # DAG files change with a deploy of this repository, not while it runs: re-parsing
        # each one every 30 s (the default) took ~14 % of a core of the 2 the models train on.
        # New files are still picked up by the folder listing (refresh_interval).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        # The project's own packages must import in task processes.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(s.root), os.environ.get("PYTHONPATH")])),
        "TAILOR_ROOT": str(s.root),
        "TAILOR_PROFILE": s.profile,
        "MLFLOW_TRACKING_URI": str(s.mlflow_tracking_uri),
        **NO_USAGE_DATA,  # task processes use MLflow, DVC and GX
        **(cluster.airflow_cluster_env(s) if s.is_cluster else {}),
    }


def airflow_password_file(s: Settings) -> Path:
    """Where ``airflow standalone`` writes the generated admin password."""
    return Path(s.airflow_home) / "simple_auth_manager_passwords.json.generated"


#: What ``airflow`` and ``mlflow`` stand for in the cluster profile, in start order.
CLUSTER_GROUPS: dict[str, tuple[str, ...]] = {
    "mlflow": ("postgres", "s3", "mlflow"),
    "airflow": (
        "postgres",
        "redis",
        "s3",
        "airflow-api",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-workers",
    ),
}


def expand(names: list[str], s: Settings | None = None, cluster: bool | None = None) -> list[str]:
    """Service names for ``names``: in the cluster profile (or with ``cluster``) ``airflow``
    and ``mlflow`` expand to the servers they need (:data:`CLUSTER_GROUPS`, workers one by
    one); each name once."""
    s = s or get_settings()
    cluster = s.is_cluster if cluster is None else cluster
    out: list[str] = []
    for name in names:
        parts = CLUSTER_GROUPS.get(name, (name,)) if cluster else (name,)
        for part in parts:
            subs = (
                [f"airflow-worker-{i}" for i in range(1, s.celery_workers + 1)] if part == "airflow-workers" else [part]
            )
            out += [p for p in subs if p not in out]
    return out


def _airflow_pools(s: Settings) -> tuple[tuple[str, ...], ...]:
    """The pool that serialises DVC commands across DAGs and the one that caps concurrent
    trainings (a task in a pool that does not exist is never scheduled): migrate the
    metadata DB, then create or resize the pools."""
    return (
        (_bin("airflow"), "db", "migrate"),
        (_bin("airflow"), "pools", "set", DVC_POOL, "1", "DVC commands, one at a time"),
        (
            _bin("airflow"),
            "pools",
            "set",
            TRAIN_POOL,
            str(s.train_slots),
            "model trainings at once (Settings.train_slots)",
        ),
    )


def _mlflow_server(
    s: Settings, workers: int, argv: list[str] | None = None, env: dict[str, str] | None = None
) -> Service:
    """The MLflow tracking server of either profile, serving artifacts from
    ``mlflow_artifacts_uri``; the backend store comes in ``argv`` or ``env``."""
    return Service(
        name="mlflow",
        argv=[
            _bin("mlflow"),
            "server",
            "--host",
            s.host,
            "--port",
            str(s.mlflow_port),
            *(argv or []),
            "--artifacts-destination",
            str(s.mlflow_artifacts_uri),
            "--workers",
            str(workers),
        ],
        port=s.mlflow_port,
        health_path="/health",
        env=env or {},
    )


def cluster_services(s: Settings) -> dict[str, Service]:
    """The cluster profile's servers (pipelines/cluster.py), each on 127.0.0.1."""
    aenv = airflow_env(s)
    pg = cluster.pg_bin() or Path("/usr/lib/postgresql/15/bin")
    out = {
        "postgres": Service(
            name="postgres",
            argv=[
                *cluster.as_postgres(),
                str(pg / "postgres"),
                "-D",
                str(s.postgres_dir),
                "-p",
                str(s.postgres_port),
                "-c",
                f"listen_addresses={s.host}",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            port=s.postgres_port,
            health="tcp",
            before=cluster.init_postgres,
            after=cluster.create_databases,
            stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM waits for every client to leave
        ),
        "redis": Service(
            name="redis",
            argv=[shutil.which("redis-server") or "redis-server", str(s.cluster_dir) + "/redis.conf"],
            port=s.redis_port,
            health="tcp",
            before=cluster.write_redis_conf,
        ),
        "s3": Service(
            name="s3",
            argv=[_bin("moto_server"), "-H", s.host, "-p", str(s.s3_port)],
            port=s.s3_port,
            health="tcp",
            after=cluster.ensure_bucket,
        ),
        # the backend URI carries the Postgres password: environment, not argv
        "mlflow": _mlflow_server(
            s, workers=2, env={"MLFLOW_BACKEND_STORE_URI": str(s.mlflow_backend_uri), **cluster.s3_env(s)}
        ),
        "airflow-api": Service(
            name="airflow-api",
            argv=[_bin("airflow"), "api-server"],
            port=s.airflow_port,
            health_path="/api/v2/monitor/health",
            env=aenv,
            prepare=_airflow_pools(s),
        ),
    }
    for comp in ("scheduler", "dag-processor", "triggerer"):
        out[f"airflow-{comp}"] = Service(
            name=f"airflow-{comp}", argv=[_bin("airflow"), comp], port=None, health="process", env=aenv
        )
    for i in range(1, s.celery_workers + 1):
        out[f"airflow-worker-{i}"] = Service(
            name=f"airflow-worker-{i}",
            port=None,
            health="process",
            argv=[_bin("airflow"), "celery", "worker", "--celery-hostname", f"tailor-worker-{i}@%h"],
            env={**aenv, **cluster.worker_env(s, i)},
        )
    return out


def services(s: Settings | None = None) -> dict[str, Service]:
    """The services ``tailor up`` knows, by name (the cluster profile's servers too when it is on)."""
    s = s or get_settings()
    extra = cluster_services(s) if s.is_cluster else {}
    embedded = {
        "airflow": Service(
            name="airflow",
            argv=[_bin("airflow"), "standalone"],
            port=s.airflow_port,
            health_path="/api/v2/monitor/health",
            env=airflow_env(s),
            prepare=_airflow_pools(s),
        ),
        "mlflow": extra.get("mlflow")
        or _mlflow_server(s, workers=1, argv=["--backend-store-uri", str(s.mlflow_backend_uri)]),
        "report": Service(
            name="report",
            argv=[_bin("tailor"), "quality", "report", "--port", str(s.report_port)],
            port=s.report_port,
            health_path="/",
            env={"TAILOR_ROOT": str(s.root)},
        ),
        "malls": Service(
            name="malls",
            # the real-photo mall joins the synthetic ones when ../shared has the photos
            argv=[
                _bin("tailor"),
                "mall",
                "serve",
                "--world",
                str(s.demo_world_dir),
                *(["--photos", str(s.demo_photos_dir)] if s.demo_photos_dir else []),
            ],
            port=s.mall_base_port,
            health_path="/robots.txt",
            env={"TAILOR_ROOT": str(s.root)},
        ),
    }
    # In the cluster profile `airflow` is the group of CLUSTER_GROUPS, not standalone.
    return {
        **{k: v for k, v in extra.items() if k != "mlflow"},
        **{k: v for k, v in embedded.items() if not (extra and k == "airflow")},
    }


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None when it does not exist."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    """Record ``pid`` with its start time: after a reboot or a crash the number may belong to
    another process, which :func:`read_pid_file` then refuses to recognise."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": pid, "start_time": process_start_time(pid)}))
    os.replace(tmp, path)


def read_pid_file(path: Path) -> int | None:
    """The pid recorded in ``path`` if that very process still runs, else None.

    A bare number (no start time), a dead pid, or a live pid whose start time differs from
    the recorded one (the number was reused) is not trusted: nothing is signalled on its word.
    """
    try:
        rec = json.loads(path.read_text())
        pid, started = int(rec["pid"]), float(rec["start_time"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    now = process_start_time(pid)
    if now is None or abs(now - started) > 0.5 or not pid_alive(pid):
        return None
    return pid


def _read_pid(svc: Service, s: Settings) -> int | None:
    return read_pid_file(svc.pid_file(s))


def free_port(run: int = 1, host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now; with ``run`` > 1, the first of ``run``
    consecutive free ports (the demo malls take consecutive ports)."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port + run <= 65536 and not any(port_in_use(host, p) for p in range(port + 1, port + run)):
            return port


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _healthy(svc: Service, s: Settings, pid: int | None = None) -> bool:
    if svc.health == "process" or svc.port is None:
        # no port to ask: alive for a few seconds (past imports and config checks) is ready
        started = process_start_time(pid) if pid else None
        return started is not None and pid_alive(pid) and time.time() - started > 5.0  # type: ignore[arg-type]
    if svc.health == "tcp":
        return port_in_use(s.host, svc.port)
    try:
        r = httpx.get(s.url(svc.port, svc.health_path), timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code < 500


def status(s: Settings | None = None) -> dict[str, dict]:
    """Per service: pid (or None), whether its health endpoint answers, and its URL."""
    s = s or get_settings()
    out = {}
    for name, svc in services(s).items():
        pid = _read_pid(svc, s)
        out[name] = {
            "pid": pid,
            "healthy": bool(pid) and _healthy(svc, s, pid),
            "url": s.url(svc.port) if svc.port else "",
            "log": str(svc.log_file(s)),
        }
    return out


def _resolve(svc: str | Service, s: Settings) -> Service:
    return services(s)[svc] if isinstance(svc, str) else svc


def start(svc: str | Service, s: Settings | None = None, wait: bool = True, already_running_ok: bool = True) -> dict:
    """Start one service (a name from :func:`services` or any :class:`Service`) detached
    unless it already runs; wait until its health check passes.

    Raises RuntimeError naming the problem when the port is held by another process, the
    service already runs and ``already_running_ok`` is False, the process dies during
    start-up (the log's tail is included) or start-up times out (the process is stopped).
    """
    s = s or get_settings()
    s.ensure_dirs()
    svc = _resolve(svc, s)
    name = svc.name
    pid = _read_pid(svc, s)
    if pid is not None and not already_running_ok:
        raise RuntimeError(f"{name} is already running (pid file {svc.pid_file(s)}); stop it first")
    if pid is None:
        if svc.port is not None and port_in_use(s.host, svc.port):
            raise RuntimeError(
                f"{name}: port {s.host}:{svc.port} is already in use by a process Tailor did not "
                f"start; stop it or set TAILOR_{name.upper()}_PORT"
            )
        env = service_env(svc)
        if svc.before is not None:
            svc.before(s)
        for cmd in svc.prepare:
            done = subprocess.run(
                list(cmd),
                env=env,
                cwd=s.root,
                capture_output=True,
                text=True,
                timeout=svc.startup_timeout_s,
                umask=0o077,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"{name}: `{' '.join(cmd[1:])}` failed (exit {done.returncode}): "
                    f"{(done.stderr or done.stdout)[-2000:]}"
                )
        # umask 077: the log (Airflow prints its generated admin password there) and whatever
        # the service writes are readable by the operator only
        log = os.fdopen(os.open(svc.log_file(s), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        os.chmod(svc.log_file(s), 0o600)  # a log left by an older start keeps its old mode otherwise
        proc = subprocess.Popen(
            svc.argv,
            env=env,
            cwd=s.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: clean stop
            umask=0o077,
        )
        write_pid_file(svc.pid_file(s), proc.pid)
        pid = proc.pid
        started = True
    else:
        started = False
    if wait:
        deadline = time.monotonic() + svc.startup_timeout_s
        while not _healthy(svc, s, pid):
            if not pid_alive(pid):
                tail = svc.log_file(s).read_text(errors="replace")[-3000:]
                svc.pid_file(s).unlink(missing_ok=True)
                raise RuntimeError(f"{name} exited during start-up; log tail:\n{tail}")
            if time.monotonic() > deadline:
                stop(svc, s)
                raise RuntimeError(f"{name} not healthy after {svc.startup_timeout_s:.0f}s; see {svc.log_file(s)}")
            time.sleep(1.0)
        if svc.after is not None:  # idempotent: databases, bucket
            svc.after(s)
    return {"name": name, "pid": pid, "started": started, "url": s.url(svc.port) if svc.port else ""}


def stop_everything(s: Settings | None = None) -> dict[str, bool]:
    """Stop every service either profile may have started here (the pid files tell which
    run), Airflow and MLflow before the stores they write to; ``{name: was running}``."""
    s = s or get_settings()
    known = services(s)
    stack = list(reversed(expand(["mlflow", "airflow"], s, cluster=True)))  # workers ... postgres
    names = list(dict.fromkeys([*(n for n in [*known, "airflow"] if n not in stack), *stack]))
    out = {}
    for name in names:
        # A cluster server while the embedded profile is on: its pid file is all stop needs.
        svc = known.get(name) or Service(
            name=name, argv=[], port=None, stop_signal=signal.SIGINT if name == "postgres" else signal.SIGTERM
        )
        out[name] = stop(svc, s)
    return out


def stop(svc: str | Service, s: Settings | None = None, timeout_s: float = 30.0) -> bool:
    """Stop one service's whole process group; returns False when it was not running."""
    s = s or get_settings()
    svc = _resolve(svc, s)
    pid = _read_pid(svc, s)
    svc.pid_file(s).unlink(missing_ok=True)
    if pid is None:
        return False
    # Wait for the whole group, not only its leader: a launcher that exits at once on SIGTERM
    # (Airflow's) can leave a member still shutting down or stuck, which then gets SIGKILL.
    for sig, wait_s in ((svc.stop_signal, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return True
            time.sleep(0.2)
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still running (zombies do not count)."""
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def describe(s: Settings | None = None) -> str:
    """Human-readable URLs and credentials location for the running services."""
    s = s or get_settings()
    lines = []
    st = status(s)
    for name, info in st.items():
        state = "up" if info["healthy"] else ("starting" if info["pid"] else "down")
        lines.append(f"{name:8s} {state:8s} {info['url']}   (log: {info['log']})")
    pw = airflow_password_file(s)
    if pw.exists():
        try:
            users = json.loads(pw.read_text())
            who = ", ".join(users)
        except (ValueError, OSError):
            who = "admin"
        lines.append(f"Airflow login: user(s) {who}; password in {pw}")
    else:
        lines.append(f"Airflow admin password will be written to {pw}")
    return "\n".join(lines)
