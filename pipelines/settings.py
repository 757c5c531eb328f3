"""The one settings module: every configurable path, port and URI of Tailor is a field here.

Each field can be overridden by an environment variable named ``TAILOR_<FIELD>`` (for
example ``TAILOR_DATA_DIR=/mnt/data``). Paths left unset derive from ``root`` so that a
single ``TAILOR_ROOT`` relocates the whole embedded default. Nothing is created at import
time; call :func:`Settings.ensure_dirs` where a command needs the directories.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root, found from this file (pipelines/settings.py -> repo root).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Typed configuration for the embedded default; every field is env-overridable."""

    model_config = SettingsConfigDict(env_prefix="TAILOR_", extra="ignore")

    root: Path = Field(PROJECT_ROOT, description="project root")
    # Derived paths (None -> computed from root in _derive).
    data_dir: Path | None = Field(None, description="DVC-tracked data tree (data.dvc)")
    var_dir: Path | None = Field(None, description="git-ignored runtime state")
    worlds_dir: Path | None = Field(None, description="generated synthetic worlds")
    run_dir: Path | None = Field(None, description="pid files and service logs")
    airflow_home: Path | None = Field(None, description="AIRFLOW_HOME (git-ignored)")
    dags_dir: Path | None = Field(None, description="Airflow dags folder")
    mlflow_dir: Path | None = Field(None, description="MLflow backend + artifact root")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI")
    mlflow_artifacts_dir: Path | None = Field(None, description="MLflow artifact root")
    bentoml_home: Path | None = Field(None, description="BENTOML_HOME")
    cache_dir: Path | None = Field(None, description="derived, re-computable data (frozen-trunk features)")
    expectations_dir: Path | None = Field(None, description="Great Expectations project")
    dvc_remote: str | None = Field(None, description="default DVC remote (path or URL)")
    closet_dir: Path | None = Field(None, description=(
        "shoppers' closets: uploaded images, content-addressed (default <var_dir>/closet)"))
    closet_db_url: str | None = Field(None, description=(
        "SQLAlchemy URL of the closet/users database (default: SQLite file in closet_dir; "
        "a postgresql+psycopg:// URL switches to Postgres with no code change)"))
    photos_dir: Path | None = Field(None, description=(
        "real garment photos served as the demo's photo mall when the folder exists "
        "(default: ../shared/datasets/clothing-photos beside the project root)"))

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
    train_parallel: int = Field(0, ge=0, description=(
        "training tasks that may run at once per retrain run; 0 = one per 2 CPU cores (each "
        "task uses 2 torch threads and DataLoader workers, so more only oversubscribes the CPU)"))

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        r = self.root
        self.data_dir = self.data_dir or r / "data"
        self.var_dir = self.var_dir or r / "var"
        self.worlds_dir = self.worlds_dir or self.var_dir / "worlds"
        self.run_dir = self.run_dir or self.var_dir / "run"
        self.airflow_home = self.airflow_home or self.var_dir / "airflow"
        self.dags_dir = self.dags_dir or r / "dags"
        self.mlflow_dir = self.mlflow_dir or r / "mlflow"
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
        self.mlflow_artifacts_dir = self.mlflow_artifacts_dir or self.mlflow_dir / "artifacts"
        self.bentoml_home = self.bentoml_home or self.var_dir / "bentoml"
        self.cache_dir = self.cache_dir or self.var_dir / "cache"
        self.expectations_dir = self.expectations_dir or r / "expectations"
        # Outside the DVC-tracked tree and git-ignored; object storage in production.
        self.dvc_remote = self.dvc_remote or str(r / ".dvc-storage")
        self.closet_dir = self.closet_dir or self.var_dir / "closet"
        self.closet_db_url = self.closet_db_url or f"sqlite:///{self.closet_dir / 'closet.db'}"
        self.photos_dir = self.photos_dir or r.parent / "shared" / "datasets" / "clothing-photos"
        return self

    # Typed accessors so callers don't have to assert the derived Optionals.
    @property
    def demo_world_dir(self) -> Path:
        """Directory of the embedded default synthetic world."""
        return Path(self.worlds_dir) / self.demo_world  # type: ignore[arg-type]

    @property
    def demo_photos_dir(self) -> Path | None:
        """The real-photo mall's folder (``photos_dir``) when it exists with its ``labels.csv``."""
        p = Path(self.photos_dir)  # type: ignore[arg-type]
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
        for d in (self.var_dir, self.worlds_dir, self.run_dir, self.airflow_home,
                  self.mlflow_dir, self.mlflow_artifacts_dir, self.bentoml_home, self.data_dir):
            Path(d).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        # Runtime state (generated passwords, logs, pid files, model artifacts) is the
        # operator's alone: other local users cannot read or list it.
        for d in (self.var_dir, self.mlflow_dir):
            os.chmod(d, 0o700)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read from the environment once)."""
    return Settings()
