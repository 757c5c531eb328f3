"""Fixtures shared by the test modules; the plain helpers they use are in ``tests/helpers``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.malls.server import MallServer
from pipelines.services import free_port
from pipelines.settings import PROJECT_ROOT, Settings
from tests.helpers import SHARED_PHOTOS, missing
from tests.helpers.malls import make_fake_world, running_malls


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated world (seed 7), shared by every test of the session."""
    from pipelines.synth import WorldConfig, generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "small", WorldConfig.small(seed=7))


@pytest.fixture(scope="session")
def small_set(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training set (all four manifests, train/val/test splits) made from ``small_world``."""
    from pipelines.ingest.world import world_manifest_rows
    from pipelines.train.devset import training_set_from_rows

    return training_set_from_rows(
        world_manifest_rows(small_world), small_world, tmp_path_factory.mktemp("ts") / "small", seed=0
    )


@pytest.fixture(scope="session")
def shared_photos() -> Path:
    """The real CC0 photos beside the project; tests using it skip where it is absent."""
    if not (SHARED_PHOTOS / "labels.csv").exists():
        missing(f"real photos not found at {SHARED_PHOTOS}")
    return SHARED_PHOTOS


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway Postgres server (Debian's postgresql binaries) on a free loopback port,
    as ``postgresql+psycopg://`` URL; stopped and deleted after the session. Postgres
    refuses to run as root, so as root it runs as the ``postgres`` system user."""
    import shutil
    import subprocess
    import tempfile

    from pipelines.cluster import as_postgres, pg_bin

    bindir = pg_bin()
    if bindir is None:
        missing("postgresql binaries missing: apt-get install -y postgresql")
    as_user = as_postgres()
    root = Path(tempfile.mkdtemp(prefix="tailor-pg-", dir="/tmp"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    run = lambda *argv: subprocess.run([*as_user, *argv], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tailor", "--no-sync", "-E", "UTF8")
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start postgres: {exc.stderr}")
    try:
        yield f"postgresql+psycopg://tailor@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- malls
@pytest.fixture(scope="session")
def fake_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-product fabricated world (fast; independent of pipelines.synth)."""
    return make_fake_world(tmp_path_factory.mktemp("fake_world"), n=60, seed=3)


@pytest.fixture(scope="session")
def demo_malls(small_world: Path) -> Iterator[MallServer]:
    """The three clean demo malls of ``small_world``, running on free ports (call
    ``server.reset()`` after changing a revision, the robots mode or fault counters)."""
    from pipelines.malls.demo import build_demo_malls

    with running_malls(build_demo_malls(small_world, seed=0)) as server:
        yield server


@pytest.fixture(scope="session")
def faulty_malls(small_world: Path) -> Iterator[MallServer]:
    """The three demo malls of ``small_world`` with every fault kind on."""
    from pipelines.malls.demo import build_demo_malls
    from pipelines.malls.faults import FaultConfig

    with running_malls(build_demo_malls(small_world, seed=0, faults=FaultConfig.all_on())) as server:
        yield server


@pytest.fixture(scope="session")
def photo_mall(shared_photos: Path) -> Iterator[MallServer]:
    """The photo mall (all photos of the shared dataset); skips when the dataset is absent."""
    from pipelines.malls.photos import build_photo_mall

    with running_malls([build_photo_mall(shared_photos)]) as server:
        yield server


# --------------------------------------------------------------------------- serving, deploy, registry
@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory: pytest.TempPathFactory, small_world: Path) -> Path:
    """One untrained bundle per test session (shared on disk by the serve/deploy modules)."""
    from pipelines.deploy.bundle import fresh_bundle

    out = tmp_path_factory.getbasetemp() / "serve-bundle"
    if not (out / "manifest.json").exists():
        fresh_bundle(out, small_world, seed=0)
    return out


@pytest.fixture(scope="module")
def dsettings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Deploy settings: a fresh var dir and free ports for the public, staging and alternate slots."""
    var = tmp_path_factory.mktemp("deploy-var")
    return Settings(
        root=PROJECT_ROOT,
        var_dir=var,
        bentoml_home=var / "bentoml",
        bento_port=free_port(),
        bento_staging_port=free_port(),
        bento_alt_port=free_port(),
    )


@pytest.fixture()
def mlflow_store(tmp_path: Path) -> Settings:
    """Settings whose MLflow store is a fresh sqlite file under ``tmp_path``."""
    s = Settings(root=tmp_path, mlflow_dir=tmp_path / "mlflow")
    Path(s.mlflow_dir).mkdir(parents=True)
    return s


@pytest.fixture()
def tiny_training_set(tmp_path: Path) -> Path:
    """A one-row training set (tagger manifest only): enough for the registry to log against."""
    import pandas as pd

    ts = tmp_path / "ts"
    (ts / "manifests").mkdir(parents=True)
    (ts / "training_set.json").write_text(json.dumps({"format": 1, "id": "ts-1", "data_root": "."}))
    pd.DataFrame(
        {
            "image": ["a.jpg"],
            "split": ["train"],
            "source": ["synthetic"],
            "repeat": [1],
            "weight": [1.0],
            "bbox": [None],
            "category": ["dress"],
        }
    ).to_parquet(ts / "manifests" / "tagger.parquet")
    return ts
