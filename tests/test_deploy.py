"""Deploy: build -> candidate -> smoke -> switch on free ports; a candidate failing its smoke
test leaves the previous release serving; rollback restores the release before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.settings import Settings
from tests.helpers.serving import broken_copy, polled, served_versions

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_deploy_failed_deploy_and_rollback(
    dsettings: Settings,
    serve_bundle: Path,
    small_world: Path,
    tmp_path: Path,
):
    from pipelines.deploy import release
    from pipelines.deploy.stages import deploy

    s = dsettings
    try:
        # 1. first deploy: built Bento, smoke-tested on staging, switched to the public port
        first = deploy({"bundle": str(serve_bundle)}, build=True, s=s, world=small_world)
        assert first["bento"].startswith("tailor-search:")
        first_versions = served_versions(s)
        assert first_versions["index"] == json.loads((serve_bundle / "manifest.json").read_text())["versions"]["index"]
        assert release.status(s)["current"] == first["id"]

        # 2. a candidate failing its smoke test: the run fails, the first release keeps serving
        bad = broken_copy(serve_bundle, tmp_path / "bad", "broken-index")
        with polled(s) as seen, pytest.raises(RuntimeError, match="smoke"):
            deploy({"bundle": str(bad)}, build=False, s=s, world=small_world)
        assert set(seen) == {200}, seen
        assert served_versions(s) == first_versions  # exactly the first release, still serving
        st = release.status(s)
        idle = "b" if st["live_slot"] == "a" else "a"
        assert st["current"] == first["id"] and st[f"bento-{idle}"]["pid"] is None
        assert st["last_events"][-1]["event"] == "deploy_failed"

        # 3. switch to another release, then roll back to the first: the public port answers
        # every poll (every 100 ms) throughout, and only the live slot keeps running
        other = broken_copy(serve_bundle, tmp_path / "other", "other-index")
        rel = release.new_release(
            {
                "bundle": str(other),
                "versions": json.loads((other / "manifest.json").read_text())["versions"],
                "id": "other",
            },
            s,
        )
        with polled(s) as seen:
            release.switch(rel, s)
            assert served_versions(s)["index"] == "other-index"
            back = release.rollback(s)
        assert set(seen) == {200} and seen[200] > 10, seen
        assert back["current"] == first["id"]
        assert served_versions(s) == first_versions
        st = release.status(s)
        assert [st[f"bento-{x}"]["pid"] is not None for x in ("a", "b")].count(True) == 1
        assert st["gateway"]["upstream"] == st[f"bento-{st['live_slot']}"]["url"]

        # 4. after a crash of everything (a reboot), `tailor up` brings the current release back
        release.stop_all(s)
        assert release.ensure_serving(s)
        assert served_versions(s) == first_versions
        assert release.ensure_serving(s) is None  # already serving: nothing to do
    finally:
        release.stop_all(s)
