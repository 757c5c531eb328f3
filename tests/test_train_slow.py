"""Quality runs (``slow``): the demo profile on the default-size world, and real photos."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.ingest.world import world_manifest_rows
    from pipelines.synth import WorldConfig, generate_world
    from pipelines.train.devset import training_set_from_rows

    root = tmp_path_factory.mktemp("default")
    world = generate_world(root / "world", WorldConfig(workers=2))
    return training_set_from_rows(world_manifest_rows(world), world, root / "ts", seed=0)


@pytest.mark.parametrize("name", ["detector", "parser", "tagger", "embedder"])
def test_demo_profile_learns(name: str, default_set: Path, tmp_path: Path) -> None:
    """The demo profile beats chance clearly on held-out data (not the full targets)."""
    from pipelines.train import train_model

    t0 = time.perf_counter()
    res = train_model(name, default_set, tmp_path / name, profile="demo", progress=False)
    print(name, round(time.perf_counter() - t0, 1), "s", res.metrics)
    # Floors well above chance with margin under what the demo profile measured on this
    # world (map_50 0.059, miou 0.226, acc_category 0.34, recall_at_5 0.38); chance is
    # ~0 mAP, ~0.07 mIoU (14 classes), 0.09 category accuracy (11), 5/240 Recall@5.
    floor = {"detector": ("map_50", 0.03), "parser": ("miou", 0.15), "tagger": ("acc_category", 0.2),
             "embedder": ("recall_at_5", 0.2)}[name]
    assert res.metrics[floor[0]] >= floor[1]


@pytest.mark.shared_data
def test_real_photos_tagger_embedder(shared_photos: Path, tmp_path: Path) -> None:
    """Tagger and embedder train on real photos (dev split) and report the _real metrics."""
    from pipelines.ingest.photos import photo_manifest_rows
    from pipelines.train import train_model
    from pipelines.train.devset import training_set_from_rows

    rows = photo_manifest_rows(shared_photos, limit=600, skip_non_garment=True)
    ts = training_set_from_rows(rows, shared_photos, tmp_path / "ts", seed=0)
    over = {"epochs": 2, "crop_size": 64}
    tag = train_model("tagger", ts, tmp_path / "tagger", overrides=over, progress=False)
    print("tagger (real photos)", tag.metrics)
    assert "acc_category_real" in tag.metrics and tag.primary_metric == "acc_category_real"
    emb = train_model("embedder", ts, tmp_path / "embedder", overrides=over, progress=False)
    print("embedder (real photos)", emb.metrics)
    assert "precision_at_5_real" in emb.metrics
    det = train_model("detector", ts, tmp_path / "detector", overrides={"epochs": 1, "image_size": 192}, progress=False)
    print("detector (real photos)", det.metrics)
    assert "top_category_acc_real" in det.metrics
