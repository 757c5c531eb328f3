"""The cluster profile on one machine: the real servers a small Tailor cluster runs.

``TAILOR_PROFILE=cluster tailor up`` (or ``tailor up --cluster``) starts, each bound to
127.0.0.1 with credentials generated into ``<var_dir>/cluster/secrets.json``:

==================  =========================================================================
postgres            Debian's PostgreSQL: databases ``airflow``, ``mlflow``, ``closet``
redis               Debian's redis-server: the Celery broker and result backend
s3                  moto's standalone S3-compatible server (from PyPI): bucket ``tailor``
                    holding MLflow's artifacts (``mlflow/``) and the DVC remote (``dvc/``)
mlflow              ``mlflow server`` on Postgres, proxying artifacts to the object store
airflow-api         Airflow's api-server (UI, REST API, the tasks' execution API)
airflow-scheduler   with the ``CeleryExecutor``
airflow-dag-processor, airflow-triggerer
airflow-worker-N    ``celery_workers`` Celery workers (default 2), each running one task at a
                    time (solo pool) and reporting its own hostname (``tailor-worker-N``)
                    in the task instances it runs
==================  =========================================================================

Pointing the URL settings (``TAILOR_AIRFLOW_DB_URL``, ``TAILOR_CELERY_BROKER_URL``,
``TAILOR_MLFLOW_BACKEND_URI``, ``TAILOR_S3_ENDPOINT_URL`` ...) at managed services instead
needs no code change; the README's "Scaling out" maps each to its managed counterpart.

Limits, said plainly: moto keeps objects in memory, so this object store is as durable as
its process (``tailor down`` empties it); a real deployment points ``s3_endpoint_url`` at
S3, GCS's S3 API or MinIO. The workers share this machine's file system for ``data/`` and
``var/``; on several hosts those live on a shared volume (README, "Scaling out").
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from pipelines.settings import Settings, cluster_secrets

#: The database per component on the cluster's Postgres.
DATABASES = ("airflow", "mlflow", "closet")


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` in the cluster profile: the worker's own name
    (``TAILOR_WORKER_NAME``, one per Celery worker on this machine) or the host's FQDN."""
    return os.environ.get("TAILOR_WORKER_NAME") or socket.getfqdn()


def pg_bin() -> Path | None:
    """Directory of Debian's PostgreSQL server binaries (the newest installed), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def as_postgres() -> list[str]:
    """Postgres refuses to run as root: as root, its commands run as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def require_binaries() -> None:
    """Fail with what to install when a Debian server the cluster needs is missing."""
    missing = []
    if pg_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if missing:
        raise RuntimeError(
            f"the cluster profile needs Debian's {' and '.join(missing)}: apt-get install -y {' '.join(missing)}"
        )


def init_postgres(s: Settings) -> None:
    """Create the Postgres data directory (``initdb``, password auth, user ``tailor``) unless
    it exists. Idempotent; never touches an existing cluster's data."""
    require_binaries()
    data = Path(s.postgres_dir)
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    sec = cluster_secrets(Path(s.cluster_dir))
    # The password reaches initdb through a file only the postgres user reads, never argv.
    with tempfile.NamedTemporaryFile("w", delete=False, dir="/tmp", prefix="tailor-pgpw-") as fh:
        fh.write(sec["postgres_password"] + "\n")
    try:
        if os.geteuid() == 0:
            shutil.chown(fh.name, "postgres", "postgres")
        done = subprocess.run(
            [
                *as_postgres(),
                str(pg_bin() / "initdb"),
                "-D",
                str(data),
                "-U",
                "tailor",
                "--pwfile",
                fh.name,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr[-2000:]}")


def create_databases(s: Settings) -> None:
    """Create the databases of :data:`DATABASES` that do not exist yet."""
    import psycopg

    sec = cluster_secrets(Path(s.cluster_dir))
    with psycopg.connect(
        host=s.host,
        port=s.postgres_port,
        user="tailor",
        dbname="postgres",
        password=sec["postgres_password"],
        autocommit=True,
        connect_timeout=10,
    ) as con:
        have = {r[0] for r in con.execute("SELECT datname FROM pg_database")}
        for db in DATABASES:
            if db not in have:
                con.execute(f'CREATE DATABASE "{db}"')


def write_redis_conf(s: Settings) -> Path:
    """Redis's config (bind, port, password, no persistence: a broker's queue is transient)
    in a 0600 file, so the password is not on a command line."""
    sec = cluster_secrets(Path(s.cluster_dir))
    d = Path(s.cluster_dir) / "redis"
    d.mkdir(parents=True, exist_ok=True)
    conf = Path(s.cluster_dir) / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(
            f"bind {s.host}\nport {s.redis_port}\nprotected-mode yes\nrequirepass {sec['redis_password']}\n"
            f'dir {d}\nsave ""\nappendonly no\ndaemonize no\n'
        )
    return conf


def s3_env(s: Settings) -> dict[str, str]:
    """Environment for a process that talks to the object store itself (boto3, s3fs)."""
    env = {
        "AWS_ACCESS_KEY_ID": str(s.aws_access_key_id),
        "AWS_SECRET_ACCESS_KEY": str(s.aws_secret_access_key),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    if s.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = str(s.s3_endpoint_url)
        env["AWS_ENDPOINT_URL_S3"] = str(s.s3_endpoint_url)
    return env


def s3_client(s: Settings):  # noqa: ANN201 - boto3 client types are generated
    """A boto3 S3 client for the profile's object store."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s.s3_endpoint_url,
        aws_access_key_id=s.aws_access_key_id,
        aws_secret_access_key=s.aws_secret_access_key,
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


def ensure_bucket(s: Settings) -> None:
    """Create the profile's bucket unless it exists."""
    client = s3_client(s)
    names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if s.s3_bucket not in names:
        client.create_bucket(Bucket=s.s3_bucket)


def airflow_cluster_env(s: Settings) -> dict[str, str]:
    """What every Airflow process of the cluster shares beyond :func:`services.airflow_env`:
    the Postgres metadata DB, the CeleryExecutor and its broker, the secrets the api-server
    and the workers must agree on, and a short heartbeat timeout so that a task whose
    worker died is failed (and retried elsewhere) in seconds, not the default 5 minutes."""
    sec = cluster_secrets(Path(s.cluster_dir))
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": str(s.airflow_db_url),
        # psycopg 3 drives both of Airflow's engines (it would pick asyncpg for the async one)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": str(s.airflow_db_url),
        "AIRFLOW__CORE__EXECUTOR": str(s.airflow_executor),
        "AIRFLOW__CELERY__BROKER_URL": str(s.celery_broker_url),
        "AIRFLOW__CELERY__RESULT_BACKEND": str(s.celery_result_backend),
        # The solo pool: one task at a time per worker process, run from its main thread. A
        # prefork child is a daemonic process, and a task forked from it cannot start the
        # DataLoader worker processes the trainings use ("daemonic processes are not allowed
        # to have children", apache/airflow#14896); the threads pool breaks Airflow's task
        # supervisor (signals only work in the main thread). More slots = more workers.
        "AIRFLOW__CELERY__POOL": "solo",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipelines.cluster.worker_hostname",
        "AIRFLOW__API_AUTH__JWT_SECRET": sec["jwt_secret"],
        "AIRFLOW__CORE__FERNET_KEY": sec["fernet_key"],
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_SEC": "5",
        **s3_env(s),
    }


def worker_env(s: Settings, n: int) -> dict[str, str]:
    """The environment that tells Celery worker ``n`` (from 1) apart from its siblings: its
    name in task instances and its own log-server port (they share the machine)."""
    return {
        "TAILOR_WORKER_NAME": f"tailor-worker-{n}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(s.worker_log_port + n - 1),
    }


def object_keys(s: Settings, prefix: str) -> list[str]:
    """Every key under ``prefix`` in the profile's bucket."""
    client = s3_client(s)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.s3_bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys
