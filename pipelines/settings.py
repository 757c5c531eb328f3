"""The one settings module: every configurable path, port and URI of Tailor is a field here,
and every directory of the data layout is a property derived from them.

Each field can be overridden by an environment variable named ``TAILOR_<FIELD>`` (for
example ``TAILOR_DATA_DIR=/mnt/data``). Paths left unset derive from ``root`` so that a
single ``TAILOR_ROOT`` relocates the whole embedded default. Nothing is created at import
time; call :func:`Settings.ensure_dirs` where a command needs the directories.

``TAILOR_PROFILE`` picks the shape of the platform (README, "Scaling out"):

- ``embedded`` (default): Airflow standalone on SQLite with the LocalExecutor, MLflow on a
  SQLite file with local artifacts, the DVC remote a local folder;
- ``cluster``: Airflow on Postgres with the CeleryExecutor and a Redis broker, the MLflow
  server on Postgres with its artifacts in S3-compatible object storage, the DVC remote in
  that object storage and the closet on Postgres. ``tailor up --cluster`` starts all of it
  on this machine (pipelines/cluster.py); pointing the URL fields below at managed services
  moves it off the machine with no code change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root, found from this file (pipelines/settings.py -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _postgres_dir(d: dict) -> Path:
    """The local cluster's Postgres data directory: under ``cluster_dir``, or as root where
    the postgres system user (which runs the server) can reach it."""
    if os.geteuid() == 0:
        return Path("/var/lib/postgresql") / f"tailor-{hashlib.sha256(str(d['root']).encode()).hexdigest()[:8]}"
    return Path(d["cluster_dir"]) / "postgres"


class Settings(BaseSettings):
    """Typed configuration for the embedded default; every field is env-overridable."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="ignore")

    root: Path = Field(PROJECT_ROOT, description="project root")
    profile: Literal["embedded", "cluster"] = Field(
        "embedded", description=("embedded: SQLite, LocalExecutor, local files; cluster: Postgres, Celery + Redis, S3")
    )
    # Derived paths: unset, each is computed from the fields above it (pydantic's
    # default_factory with the validated data), so a single TAILOR_ROOT moves them all.
    # Derived URIs: unset (""), _derive computes them for the profile.
    data_dir: Path = Field(default_factory=lambda d: d["root"] / "data", description="DVC-tracked data tree (data.dvc)")
    var_dir: Path = Field(default_factory=lambda d: d["root"] / "var", description="git-ignored runtime state")
    worlds_dir: Path = Field(
        default_factory=lambda d: d["var_dir"] / "worlds", description="generated synthetic worlds"
    )
    run_dir: Path = Field(default_factory=lambda d: d["var_dir"] / "run", description="pid files and service logs")
    airflow_home: Path = Field(
        default_factory=lambda d: d["var_dir"] / "airflow", description="AIRFLOW_HOME (git-ignored)"
    )
    dags_dir: Path = Field(default_factory=lambda d: d["root"] / "dags", description="Airflow dags folder")
    mlflow_dir: Path = Field(
        default_factory=lambda d: d["root"] / "mlflow", description="MLflow backend + artifact root"
    )
    mlflow_tracking_uri: str = Field("", description="MLflow tracking URI")
    mlflow_artifacts_dir: Path = Field(
        default_factory=lambda d: d["mlflow_dir"] / "artifacts", description="MLflow artifact root"
    )
    bentoml_home: Path = Field(default_factory=lambda d: d["var_dir"] / "bentoml", description="BENTOML_HOME")
    cache_dir: Path = Field(
        default_factory=lambda d: d["var_dir"] / "cache",
        description="derived, re-computable data (frozen-trunk features)",
    )
    expectations_dir: Path = Field(
        default_factory=lambda d: d["root"] / "expectations", description="Great Expectations project"
    )
    dvc_remote: str = Field("", description="default DVC remote (path or URL)")
    closet_dir: Path = Field(
        default_factory=lambda d: d["var_dir"] / "closet",
        description=("shoppers' closets: uploaded images, content-addressed (default <var_dir>/closet)"),
    )
    closet_db_url: str = Field(
        "",
        description=(
            "SQLAlchemy URL of the closet/users database (default: SQLite file in closet_dir; "
            "a postgresql+psycopg:// URL switches to Postgres with no code change)"
        ),
    )
    photos_dir: Path = Field(
        default_factory=lambda d: d["root"].parent / "shared" / "datasets" / "clothing-photos",
        description=(
            "real garment photos served as the demo's photo mall when the folder exists "
            "(default: ../shared/datasets/clothing-photos beside the project root)"
        ),
    )

    # The cluster profile's stores. Unset, they point at the servers `tailor up --cluster`
    # starts on this machine, with the credentials it generated into <var_dir>/cluster.
    airflow_db_url: str = Field(
        "", description=("Airflow metadata DB (embedded: SQLite in airflow_home; cluster: Postgres database airflow)")
    )
    airflow_executor: str = Field("", description="LocalExecutor (embedded) or CeleryExecutor (cluster)")
    celery_broker_url: str | None = Field(None, description="Celery broker (cluster: the local Redis)")
    celery_result_backend: str | None = Field(
        None, description="Celery result backend (cluster: Postgres database airflow)"
    )
    mlflow_backend_uri: str = Field(
        "",
        description=(
            "the MLflow server's backend store (embedded: the SQLite file; cluster: Postgres database mlflow)"
        ),
    )
    mlflow_artifacts_uri: str = Field(
        "",
        description=(
            "where the MLflow server keeps artifacts (embedded: mlflow_artifacts_dir; cluster: s3://<bucket>/mlflow)"
        ),
    )
    s3_endpoint_url: str | None = Field(
        None,
        description=(
            "S3-compatible endpoint for MLflow artifacts and the DVC remote (cluster: the local moto server; "
            "unset on AWS S3 itself)"
        ),
    )
    s3_bucket: str = Field("tailor", description="bucket of the cluster profile's object storage")
    aws_access_key_id: str | None = Field(None, description="object-store key (cluster: generated)")
    aws_secret_access_key: str | None = Field(None, description="object-store secret (cluster: generated)")
    cluster_dir: Path = Field(
        default_factory=lambda d: d["var_dir"] / "cluster",
        description=(
            "state of the local cluster: generated credentials, Redis and Postgres data (default <var_dir>/cluster)"
        ),
    )
    postgres_dir: Path = Field(
        default_factory=lambda d: _postgres_dir(d),
        description=(
            "Postgres data directory of the local cluster (default <cluster_dir>/postgres; as root, where "
            "the postgres system user can reach it: /var/lib/postgresql/tailor-<hash of root>)"
        ),
    )
    postgres_port: int = 15432
    redis_port: int = 16379
    s3_port: int = 19000
    celery_workers: int = Field(
        2, ge=1, description=("Celery workers `tailor up --cluster` starts; each runs one task at a time (solo pool)")
    )
    worker_log_port: int = Field(8793, description="first Celery worker's log server port (one per worker)")

    host: str = Field("127.0.0.1", description="bind address for every component")
    airflow_port: int = 8080
    mlflow_port: int = 5000
    bento_port: int = Field(3000, description="public search endpoint (the deploy gateway)")
    bento_staging_port: int = Field(3001, description="Bento slot a (behind the gateway)")
    bento_alt_port: int = Field(3002, description="Bento slot b (behind the gateway)")
    report_port: int = 8765
    mall_base_port: int = Field(8001, description="first demo-mall port; malls take consecutive ports")

    seed: int = Field(0, description="default seed for the demo world")
    demo_world: str = Field("demo", description="name of the embedded default world")
    train_epochs: int | None = Field(
        None,
        ge=1,
        description=(
            "cap every retrain's epochs when its run sets none (quick runs: the cluster suite); "
            "unset: each profile's own"
        ),
    )
    train_parallel: int = Field(
        0,
        ge=0,
        description=(
            "training tasks that may run at once per retrain run; 0 = one per 2 CPU cores (each "
            "task uses 2 torch threads and DataLoader workers, so more only oversubscribes the CPU)"
        ),
    )

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        r = self.root
        if self.profile == "cluster":
            self._derive_cluster()
        self.mlflow_backend_uri = (
            self.mlflow_backend_uri or self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        )
        self.mlflow_artifacts_uri = self.mlflow_artifacts_uri or str(self.mlflow_artifacts_dir)
        # Embedded: the CLI and tasks open the SQLite store directly (no server needed).
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or self.mlflow_backend_uri
        self.airflow_db_url = self.airflow_db_url or f"sqlite:///{self.airflow_home / 'airflow.db'}"
        self.airflow_executor = self.airflow_executor or "LocalExecutor"
        # Outside the DVC-tracked tree and git-ignored; object storage in production.
        self.dvc_remote = self.dvc_remote or str(r / ".dvc-storage")
        self.closet_db_url = self.closet_db_url or f"sqlite:///{self.closet_dir / 'closet.db'}"
        return self

    def _derive_cluster(self) -> None:
        """Unset cluster URLs point at the local cluster's servers, with its generated credentials."""
        sec = cluster_secrets(self.cluster_dir)
        pg = f"postgresql+psycopg://tailor:{sec['postgres_password']}@{self.host}:{self.postgres_port}"
        redis = f"redis://:{sec['redis_password']}@{self.host}:{self.redis_port}"
        self.airflow_db_url = self.airflow_db_url or f"{pg}/airflow"
        self.airflow_executor = self.airflow_executor or "CeleryExecutor"
        self.celery_broker_url = self.celery_broker_url or f"{redis}/0"
        # results in Postgres (Airflow advises a database over Redis for them)
        self.celery_result_backend = self.celery_result_backend or f"db+{pg}/airflow"
        self.mlflow_backend_uri = self.mlflow_backend_uri or f"{pg}/mlflow"
        self.mlflow_artifacts_uri = self.mlflow_artifacts_uri or f"s3://{self.s3_bucket}/mlflow"
        # Clients talk to the MLflow server only; it holds the store's credentials and
        # proxies artifacts (mlflow-artifacts:/), so tasks need no object-store keys for them.
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"
        self.s3_endpoint_url = self.s3_endpoint_url or f"http://{self.host}:{self.s3_port}"
        self.aws_access_key_id = self.aws_access_key_id or sec["s3_access_key"]
        self.aws_secret_access_key = self.aws_secret_access_key or sec["s3_secret_key"]
        self.dvc_remote = self.dvc_remote or f"s3://{self.s3_bucket}/dvc"
        self.closet_db_url = self.closet_db_url or f"{pg}/closet"

    @property
    def is_cluster(self) -> bool:
        """Whether the cluster profile is on (Postgres, Celery + Redis, S3)."""
        return self.profile == "cluster"

    # The data layout: every module finds these directories here, none joins them by hand.
    @property
    def snapshots_dir(self) -> Path:
        """Crawl snapshots, one directory each (DVC-tracked)."""
        return self.data_dir / "snapshots"

    @property
    def training_sets_dir(self) -> Path:
        """Validated training sets, one directory each (DVC-tracked)."""
        return self.data_dir / "training-sets"

    @property
    def imports_dir(self) -> Path:
        """Annotation imports (street scenes with boxes and masks), one directory each (DVC-tracked)."""
        return self.data_dir / "imports"

    @property
    def crawl_state_dir(self) -> Path:
        """The crawler's own state: per-run request stores and the snapshot registry."""
        return self.var_dir / "crawl-state"

    @property
    def runs_dir(self) -> Path:
        """Training work directories (checkpoints, plots), per training set, model and profile."""
        return self.var_dir / "runs"

    @property
    def index_dir(self) -> Path:
        """Built search-index versions."""
        return self.var_dir / "index"

    @property
    def index_work_dir(self) -> Path:
        """Scratch space of index builds (one timestamped directory per build)."""
        return self.var_dir / "index-work"

    @property
    def deploy_dir(self) -> Path:
        """Releases, the deploy lease and the record of what serves."""
        return self.var_dir / "deploy"

    @property
    def bench_dir(self) -> Path:
        """Benchmark outputs (figures, pictures)."""
        return self.var_dir / "bench"

    @property
    def demo_world_dir(self) -> Path:
        """Directory of the embedded default synthetic world."""
        return self.worlds_dir / self.demo_world

    @property
    def demo_photos_dir(self) -> Path | None:
        """The real-photo mall's folder (``photos_dir``) when it exists with its ``labels.csv``."""
        p = self.photos_dir
        return p if (p / "labels.csv").is_file() else None

    @property
    def train_slots(self) -> int:
        """Concurrent training tasks: ``train_parallel`` or, when 0, ``cpu_count // 2`` (at least 1)."""
        return self.train_parallel or max(1, (os.cpu_count() or 2) // 2)

    def url(self, port: int, path: str = "") -> str:
        """``http://<host>:<port><path>`` for one of the components."""
        return f"http://{self.host}:{port}{path}"

    def ensure_dirs(self) -> None:
        """Create the runtime directories (never the data tree's content)."""
        for d in (
            self.var_dir,
            self.worlds_dir,
            self.run_dir,
            self.airflow_home,
            self.mlflow_dir,
            self.mlflow_artifacts_dir,
            self.bentoml_home,
            self.data_dir,
        ):
            Path(d).mkdir(parents=True, exist_ok=True)
        # Runtime state (generated passwords, logs, pid files, model artifacts) is the
        # operator's alone: other local users cannot read or list it.
        for d in (self.var_dir, self.mlflow_dir):
            os.chmod(d, 0o700)


def cluster_secrets(cluster_dir: Path) -> dict[str, str]:
    """The local cluster's generated credentials (``<cluster_dir>/secrets.json``, mode 0600),
    created on first use. They never leave ``var/`` (git-ignored): Postgres and Redis
    passwords, the object store's key pair, Airflow's JWT secret and Fernet key."""
    import base64

    path = Path(cluster_dir) / "secrets.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    sec = {
        "postgres_password": secrets.token_urlsafe(18),
        "redis_password": secrets.token_urlsafe(18),
        "s3_access_key": "tailor" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_urlsafe(24),
        "jwt_secret": secrets.token_urlsafe(32),
        "fernet_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    tmp = path.with_name(f".secrets.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(sec, fh)
    try:  # two processes creating it at once: the first one's secrets win
        os.link(tmp, path)
    except FileExistsError:
        pass
    tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment once)."""
    return Settings()
