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
    floor = {
        "detector": ("map_50", 0.03),
        "parser": ("miou", 0.15),
        "tagger": ("acc_category", 0.2),
        "embedder": ("recall_at_5", 0.2),
    }[name]
    assert res.metrics[floor[0]] >= floor[1]


@pytest.mark.shared_data
def test_real_photo_retrieval_with_trained_models(shared_photos: Path, tmp_path: Path) -> None:
    """Tagger and embedder trained with the demo profile on real photos; held-out photos,
    queried against a gallery of training photos they are not in, through the served
    ``predict`` path, come back with the right category and same-category neighbours."""
    import numpy as np
    from PIL import Image

    from pipelines.ingest.photos import photo_manifest_rows
    from pipelines.manifests import load_manifest
    from pipelines.train import load_model, predict, train_model
    from pipelines.train.data import load_crop, parse_bbox
    from pipelines.train.devset import training_set_from_rows
    from pipelines.train.metrics import majority_accuracy

    rows = photo_manifest_rows(shared_photos, limit=1500, skip_non_garment=True)
    ts = training_set_from_rows(rows, shared_photos, tmp_path / "ts", seed=0, fractions=(0.7, 0.1, 0.2))
    tag = train_model("tagger", ts, tmp_path / "tagger", progress=False)
    emb = train_model("embedder", ts, tmp_path / "embedder", progress=False)
    print("tagger (real photos)", {k: round(v, 3) for k, v in tag.metrics.items() if "real" in k})
    print("embedder (real photos)", {k: round(v, 3) for k, v in emb.metrics.items() if "real" in k})
    df = load_manifest(ts, "embedder")
    gal, qry = df[df["split"] == "train"].reset_index(drop=True), df[df["split"] == "test"].reset_index(drop=True)
    assert not set(gal["image"]) & set(qry["image"])

    def crops(frame) -> list[Image.Image]:
        return [load_crop(p, parse_bbox(b), 256) for p, b in zip(frame["image"], frame["bbox"], strict=True)]

    embedder, tagger = load_model("embedder", emb.checkpoint), load_model("tagger", tag.checkpoint)
    q_imgs = crops(qry)
    g_imgs = crops(gal)
    g = np.concatenate([predict("embedder", embedder, g_imgs[i : i + 64]) for i in range(0, len(g_imgs), 64)])
    q = predict("embedder", embedder, q_imgs)
    top5 = np.argsort(-(q @ g.T), axis=1)[:, :5]
    same = (gal["category"].to_numpy()[top5] == qry["category"].to_numpy()[:, None]).mean()
    chance = float(np.mean([(gal["category"] == c).mean() for c in qry["category"]]))
    cats = [t["category"][0] for t in predict("tagger", tagger, q_imgs)]
    acc = float(np.mean(np.array(cats) == qry["category"].to_numpy()))
    codes = qry["category"].astype("category").cat.codes.to_numpy()
    print(
        f"held-out queries {len(qry)} vs gallery {len(gal)}: same-category P@5 {same:.3f} (random {chance:.3f}); "
        f"category accuracy {acc:.3f} (majority {majority_accuracy(codes):.3f})"
    )
    assert same >= chance + 0.4
    assert acc >= majority_accuracy(codes) + 0.4
