"""DAG run parameters are a trust boundary (issue 14, finding 9): paths stay inside the data
and var roots, model URIs name the four registered models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.params import ParamError, check_dag_params
from pipelines.settings import PROJECT_ROOT, Settings


@pytest.fixture()
def s(tmp_path: Path) -> Settings:
    st = Settings(root=tmp_path / "proj")
    for d in (st.data_dir, st.var_dir):
        Path(d).mkdir(parents=True, exist_ok=True)
    return st


def test_paths_inside_the_data_and_var_roots_pass(s: Settings) -> None:
    ok = {
        "out": str(Path(s.data_dir) / "snapshots" / "x"),
        "training_set": "data/training-sets/t1",
        "bundle": str(Path(s.var_dir) / "bundles" / "b"),
        "malls_file": str(PROJECT_ROOT / "config" / "malls.yaml"),
        "snapshot_name": "crawl-2026_12_02",
        "embedder": "models:/tailor-embedder@champion",
        "polite": False,
    }
    assert check_dag_params(ok, s) == ok
    assert check_dag_params({"embedder": "models:/tailor-embedder/3"}, s)
    assert check_dag_params({"embedder": "pixels", "out": ""}, s)  # empty = the default


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"out": "/etc/tailor"}, "'out'"),
        ({"bundle": "/tmp/elsewhere"}, "'bundle'"),
        ({"snapshot": "data/../../outside"}, "'snapshot'"),
        ({"out": str(PROJECT_ROOT / "config" / "x")}, "'out'"),  # config/ is for malls files only
        ({"snapshot_name": "../../etc"}, "'snapshot_name'"),
        ({"embedder": "runs:/abc/model"}, "'embedder'"),
        ({"embedder": "models:/someone-else@champion"}, "'embedder'"),
        ({"embedder": "file:///tmp/model.pt"}, "'embedder'"),
        ({"embedder": "models:/tailor-embedder@champion/../x"}, "'embedder'"),
    ],
)
def test_paths_and_uris_outside_are_refused(s: Settings, params: dict, needle: str) -> None:
    with pytest.raises(ParamError, match=needle):
        check_dag_params(params, s)


def test_a_symlink_out_of_the_data_root_is_refused(s: Settings, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", Path(s.data_dir) / "link")
    with pytest.raises(ParamError, match="'catalog'"):
        check_dag_params({"catalog": str(Path(s.data_dir) / "link" / "catalog.parquet")}, s)


def test_crop_with_takes_none_champion_or_a_detector_uri() -> None:
    from pipelines.params import ParamError, check_dag_params

    for ok in ("none", "champion", "models:/tailor-detector@champion", "models:/tailor-detector/3", ""):
        assert check_dag_params({"crop_with": ok}) == {"crop_with": ok}
    for bad in ("pixels", "models:/tailor-embedder/3", "/etc/passwd", "models:/tailor-detector/../x"):
        with pytest.raises(ParamError, match="crop_with"):
            check_dag_params({"crop_with": bad})
