"""DVC tracks data/ through data.dvc, in a plain copy and in a git clone alike."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines import versioning
from pipelines.settings import PROJECT_ROOT, Settings

EMPTY_TREE = "d751713988987e9331980363e24189ce.dir"


def _copy_project_skeleton(dst: Path) -> Path:
    """What a copy of the repository brings for DVC: .dvc/config, .dvcignore, data.dvc."""
    (dst / ".dvc").mkdir(parents=True)
    for rel in (".dvc/config", ".dvc/.gitignore", ".dvcignore"):
        shutil.copy(PROJECT_ROOT / rel, dst / rel)
    return dst


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_committed_data_dvc_describes_the_tracked_tree() -> None:
    text = (PROJECT_ROOT / "data.dvc").read_text()
    assert "path: data" in text
    assert versioning.data_hash(Settings()).endswith(".dir")


@pytest.mark.parametrize("with_git", [False, True], ids=["plain-copy", "git-clone"])
def test_track_push_restore_roundtrip(tmp_path: Path, with_git: bool) -> None:
    root = _copy_project_skeleton(tmp_path / "proj")
    if with_git:
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    s = Settings(root=root)
    versioning.ensure_initialised(s)
    assert (root / "data").is_dir() and versioning.data_hash(s) == EMPTY_TREE

    snap = root / "data" / "snapshots" / "s1"
    snap.mkdir(parents=True)
    (snap / "products.jsonl").write_text('{"product_id": "p1"}\n')
    (snap / "img.bin").write_bytes(bytes(range(256)) * 40)
    before = _tree_digest(root / "data")
    version = versioning.commit_data(push=True, s=s)
    assert version != EMPTY_TREE
    assert any((root / ".dvc-storage").rglob("*")), "nothing was pushed to the default remote"

    # Lose the working copy and the local cache: the remote alone restores the same bytes.
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc" / "cache")
    versioning.dvc("pull", "data.dvc", s=s)
    assert _tree_digest(root / "data") == before
    assert versioning.data_hash(s) == version


def test_remote_override_goes_to_local_config(tmp_path: Path) -> None:
    root = _copy_project_skeleton(tmp_path / "proj")
    elsewhere = tmp_path / "bucket"
    s = Settings(root=root, dvc_remote=str(elsewhere))
    versioning.ensure_initialised(s)
    (root / "data" / "f.txt").write_text("x")
    versioning.commit_data(push=True, s=s)
    assert any(elsewhere.rglob("*")) and not (root / ".dvc-storage").exists()
    assert "override" in (root / ".dvc" / "config.local").read_text()


def test_concurrent_commits_wait_for_each_other_and_skip_staging_folders(tmp_path: Path) -> None:
    """Two processes' worth of `commit_data` at once both succeed (DVC alone makes the second
    fail on its repository lock), and a staging folder being written is not recorded."""
    from concurrent.futures import ThreadPoolExecutor

    root = _copy_project_skeleton(tmp_path / "proj")
    s = Settings(root=root)
    versioning.ensure_initialised(s)
    data = Path(s.data_dir)
    (data / "snapshots" / "a").mkdir(parents=True)
    (data / "snapshots" / "a" / "x.txt").write_text("complete")
    before = versioning.commit_data(push=False, s=s)
    (data / "snapshots" / ".b.partial").mkdir()
    (data / "snapshots" / ".b.partial" / "half.txt").write_text("being written")
    (data / "snapshots" / "c.parquet.tmp").write_text("temp")
    assert versioning.commit_data(push=False, s=s) == before  # staging and temp files ignored

    def commit(i: int) -> str:
        (data / f"f{i}.txt").write_text(str(i))
        return versioning.commit_data(push=True, s=s)

    with ThreadPoolExecutor(3) as pool:
        hashes = list(pool.map(commit, range(3)))
    # the commit that ran last saw every file: recording the tree again changes nothing
    assert versioning.commit_data(push=False, s=s) in hashes
    assert versioning.data_hash(s) != before
