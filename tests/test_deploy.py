"""Deploy: build -> candidate -> smoke -> switch on free ports; a candidate failing its smoke
test leaves the previous release serving; rollback restores the release before."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipelines.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port
from tests.test_serve import serve_bundle  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def dsettings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var = tmp_path_factory.mktemp("deploy-var")
    return Settings(root=PROJECT_ROOT, var_dir=var, bentoml_home=var / "bentoml",
                    bento_port=free_port(), bento_staging_port=free_port(), bento_alt_port=free_port())


@contextmanager
def polled(s: Settings, every_s: float = 0.1) -> Iterator[Counter]:
    """GET /info on the public port every ``every_s`` while the block runs; yields the
    count of each outcome (status code, or the exception's name)."""
    seen: Counter = Counter()
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    seen[c.get(s.url(s.bento_port, "/info")).status_code] += 1
                except httpx.HTTPError as exc:
                    seen[type(exc).__name__] += 1
                time.sleep(every_s)

    t = threading.Thread(target=poll)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


def _broken_copy(src: Path, out: Path, version: str) -> Path:
    """Same models, but an index whose vectors are random: retrieval (the smoke test) fails."""
    shutil.copytree(src, out)
    vec = np.load(out / "index" / "vectors.npy")
    rnd = np.random.default_rng(1).normal(size=vec.shape).astype(np.float32)
    np.save(out / "index" / "vectors.npy", rnd / np.linalg.norm(rnd, axis=1, keepdims=True))
    m = json.loads((out / "manifest.json").read_text())
    m["versions"]["index"] = version
    m["id"] = version
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def _served_versions(s: Settings) -> dict:
    return httpx.get(s.url(s.bento_port, "/info"), timeout=10).json()["versions"]


def test_deploy_failed_deploy_and_rollback(dsettings: Settings, serve_bundle: Path, small_world: Path,  # noqa: F811
                                           tmp_path: Path):
    from pipelines.deploy import release
    from pipelines.deploy.stages import deploy

    s = dsettings
    try:
        # 1. first deploy: built Bento, smoke-tested on staging, switched to the public port
        first = deploy({"bundle": str(serve_bundle)}, build=True, s=s, world=small_world)
        assert first["bento"].startswith("tailor-search:")
        first_versions = _served_versions(s)
        assert first_versions["index"] == json.loads((serve_bundle / "manifest.json").read_text())["versions"]["index"]
        assert release.status(s)["current"] == first["id"]

        # 2. a candidate failing its smoke test: the run fails, the first release keeps serving
        bad = _broken_copy(serve_bundle, tmp_path / "bad", "broken-index")
        with polled(s) as seen, pytest.raises(RuntimeError, match="smoke"):
            deploy({"bundle": str(bad)}, build=False, s=s, world=small_world)
        assert set(seen) == {200}, seen
        assert _served_versions(s) == first_versions  # exactly the first release, still serving
        st = release.status(s)
        idle = "b" if st["live_slot"] == "a" else "a"
        assert st["current"] == first["id"] and st[f"bento-{idle}"]["pid"] is None
        assert st["last_events"][-1]["event"] == "deploy_failed"

        # 3. switch to another release, then roll back to the first: the public port answers
        # every poll (every 100 ms) throughout, and only the live slot keeps running
        other = _broken_copy(serve_bundle, tmp_path / "other", "other-index")
        rel = release.new_release({"bundle": str(other), "versions": json.loads((other / "manifest.json").read_text())["versions"],
                                   "id": "other"}, s)
        with polled(s) as seen:
            release.switch(rel, s)
            assert _served_versions(s)["index"] == "other-index"
            back = release.rollback(s)
        assert set(seen) == {200} and seen[200] > 10, seen
        assert back["current"] == first["id"]
        assert _served_versions(s) == first_versions
        st = release.status(s)
        assert [st[f"bento-{x}"]["pid"] is not None for x in ("a", "b")].count(True) == 1
        assert st["gateway"]["upstream"] == st[f"bento-{st['live_slot']}"]["url"]

        # 4. after a crash of everything (a reboot), `tailor up` brings the current release back
        release.stop_all(s)
        assert release.ensure_serving(s)
        assert _served_versions(s) == first_versions
        assert release.ensure_serving(s) is None  # already serving: nothing to do
    finally:
        release.stop_all(s)
