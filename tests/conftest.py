"""Shared fixtures. Mall fixtures (demo_malls, faulty_malls, photo_mall) come from the
``pipelines.malls.testing`` plugin so other projects' tests can use them too."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.services import free_port  # noqa: F401  (the tests' helper for ports)
from pipelines.settings import PROJECT_ROOT

pytest_plugins = ["pipelines.malls.testing"]

SHARED_PHOTOS = PROJECT_ROOT.parent / "shared" / "datasets" / "clothing-photos"


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated world (seed 7), shared by every test of the session."""
    from pipelines.synth import WorldConfig, generate_world

    return generate_world(tmp_path_factory.mktemp("world") / "small", WorldConfig.small(seed=7))


@pytest.fixture(scope="session")
def shared_photos() -> Path:
    """The real CC0 photos beside the project; tests using it skip where it is absent."""
    if not (SHARED_PHOTOS / "labels.csv").exists():
        pytest.skip(f"real photos not found at {SHARED_PHOTOS}")
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
        pytest.skip("postgresql binaries missing: apt-get install -y postgresql")
    as_user = as_postgres()
    root = Path(tempfile.mkdtemp(prefix="tailor-pg-", dir="/tmp"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    run = lambda *argv: subprocess.run([*as_user, *argv], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tailor", "--no-sync", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start postgres: {exc.stderr}")
    try:
        yield f"postgresql+psycopg://tailor@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
