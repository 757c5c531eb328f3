"""Shared fixtures. Mall fixtures (demo_malls, faulty_malls, photo_mall) come from the
``pipelines.malls.testing`` plugin so other projects' tests can use them too."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
