"""The training set written from a validated snapshot (+ annotation import) follows
pipelines.manifests, has leak-free splits and balanced train rows, and is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.manifests import MODELS, load_manifest, read_training_set
from pipelines.settings import Settings
from tests.helpers.snapshots import fabricate_snapshot


@pytest.fixture(scope="module")
def built(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pipelines.validate.annotations import import_annotations
    from pipelines.validate.checkpoint import validate_snapshot
    from pipelines.validate.training_set import build_training_set

    root = tmp_path_factory.mktemp("tsproj")
    s = Settings(root=root)
    imp = import_annotations(small_world, root / "data" / "imports" / "small", dvc=False, s=s)
    snap = fabricate_snapshot(root / "data" / "snapshots" / "fab", n=80, near_dup_every=4)
    rep = validate_snapshot(snap, s=s, annotations=imp, previous_rows=0)
    ts = build_training_set(Path(rep["run_dir"]), s=s)
    return {"s": s, "ts": ts, "rep": rep}


def test_training_set_follows_the_contract(built: dict) -> None:
    ts = built["ts"]
    meta = read_training_set(ts)
    assert meta["format"] == 1 and meta["snapshot_id"] and meta["annotations_id"]
    assert ts.parent.name == "training-sets"
    for model in MODELS:
        df = load_manifest(ts, model)
        assert len(df) > 0, model
        assert set(df["split"]) <= {"train", "val", "test"}
        assert Path(df["image"].iloc[0]).exists()
        assert ((df["repeat"] == 1) | (df["split"] == "train")).all()
    parser = load_manifest(ts, "parser")
    assert Path(parser["label_png"].iloc[0]).exists()
    boxes = json.loads(load_manifest(ts, "detector")["boxes"].iloc[0])
    assert {"bbox", "category"} <= set(boxes[0])
    for h in meta["histograms"]:
        assert (ts / h).exists()
    assert (ts / "catalog.parquet").exists() and (ts / "quarantine.parquet").exists()


def test_manifest_splits_do_not_leak(built: dict) -> None:
    """Whole-image models are held out by image, crop models by product: an image has one
    split for the detector and the parser, a product one split for every crop of it and
    every catalog row; and the images split near the configured fractions (not the 42/26/32
    that giving a scene its products' strictest split produced)."""
    import pandas as pd

    frames = {m: load_manifest(built["ts"], m) for m in MODELS}
    scenes = pd.concat([frames[m][["image", "split"]] for m in ("detector", "parser")])
    assert scenes.groupby("image")["split"].nunique().max() == 1
    share = scenes.drop_duplicates("image")["split"].value_counts(normalize=True)
    assert share["train"] > 0.6, share.to_dict()
    emb = frames["embedder"].dropna(subset=["identity"])
    assert emb.groupby("identity")["split"].nunique().max() == 1
    crops = pd.concat([frames[m][["image", "bbox", "split"]] for m in ("tagger", "embedder")])
    crops["bbox"] = crops["bbox"].astype(str)
    assert crops.groupby(["image", "bbox"])["split"].nunique().max() == 1
    cat = pd.read_parquet(built["ts"] / "catalog.parquet")
    assert cat.groupby("product_id")["split"].nunique().max() == 1


def test_tagger_train_split_is_oversampled(built: dict) -> None:
    meta = read_training_set(built["ts"])
    tag = meta["balancing"]["tagger"]["category"]
    assert tag["strategy"] == "oversample"
    assert max(tag["after"].values()) == max(tag["before"].values())
    assert min(tag["after"].values()) > min(tag["before"].values())
    assert meta["counts"]["tagger"]["train_draws"] > meta["counts"]["tagger"]["train"]


def test_build_is_idempotent_and_deterministic(built: dict, tmp_path: Path) -> None:
    import pandas as pd

    from pipelines.validate.training_set import build_training_set

    run_dir = Path(built["rep"]["run_dir"])
    assert build_training_set(run_dir, s=built["s"]) == built["ts"]
    again = build_training_set(run_dir, out=tmp_path / "again", s=built["s"])
    for m in MODELS:
        a = pd.read_parquet(built["ts"] / "manifests" / f"{m}.parquet")
        b = pd.read_parquet(again / "manifests" / f"{m}.parquet")
        assert a[["split", "repeat", "weight"]].equals(b[["split", "repeat", "weight"]])


def test_real_photo_rows_carry_taxonomy_category_and_implied_attributes(tmp_path: Path) -> None:
    """A real-photo mall's rows: the taxonomy category (Longsleeve -> longsleeve, not t-shirt),
    the attribute values the category implies (models.taxonomy.IMPLIED), the others unknown;
    the mall's own label kept; no identity."""
    import pandas as pd

    from models.taxonomy import ATTRIBUTES, IMPLIED
    from pipelines.validate.checkpoint import validate_snapshot
    from pipelines.validate.training_set import build_training_set

    labels = ["Longsleeve", "Polo", "Hoodie", "T-Shirt", "Pants", "Blazer", "Blouse", "Dress", "Shoes", "Outwear"]
    s = Settings(root=tmp_path / "proj")

    def as_photos(p: pd.DataFrame, i: pd.DataFrame):
        return p.assign(category=[labels[k % len(labels)] for k in range(len(p))]), i

    snap = fabricate_snapshot(
        tmp_path / "data" / "snapshots" / "photos",
        n=60,
        mall="photos",
        images_per_product=1,
        near_dup_every=0,
        mutate=as_photos,
    )
    rep = validate_snapshot(snap, s=s, previous_rows=0)
    ts = build_training_set(Path(rep["run_dir"]), s=s)
    tag = load_manifest(ts, "tagger")
    assert (tag["source"] == "photos").all() and {"label", *ATTRIBUTES} <= set(tag.columns)
    assert dict(zip(tag["label"], tag["category"], strict=False)) == {
        "Longsleeve": "longsleeve",
        "Polo": "polo",
        "Hoodie": "hoodie",
        "T-Shirt": "t-shirt",
        "Pants": "pants",
        "Blazer": "blazer",
        "Blouse": "blouse",
        "Dress": "dress",
        "Shoes": "shoes",
        "Outwear": "outerwear",
    }
    for r in tag.itertuples(index=False):
        implied = IMPLIED.get(r.category, {})
        for a in ATTRIBUTES:
            v = getattr(r, a)
            assert (v == implied[a]) if a in implied else pd.isna(v), (r.label, a, v)
    emb = load_manifest(ts, "embedder")
    assert emb["identity"].isna().all() and set(emb["label"]) == set(labels)
    cat = pd.read_parquet(ts / "catalog.parquet")
    assert set(cat.loc[cat["label"] == "Longsleeve", "category"]) == {"longsleeve"}
    # product shots are detector rows too: one derived box inside the photo, the shot's own
    # category and split (no test product trained on), at most the configured photos per split
    from pipelines.validate.config import load_validation_config

    caps = load_validation_config()["product_shots"]["per_split"]
    det = load_manifest(ts, "detector")
    assert len(det) and (det["source"] == "photos").all()
    truth = {r.image: (r.category, r.split) for r in tag.itertuples(index=False)}
    for r in det.itertuples(index=False):
        (box,) = json.loads(r.boxes)
        x, y, w, h = box["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= r.width + 0.5 and y + h <= r.height + 0.5
        assert (box["category"], r.split) == truth[r.image] and r.label in labels
    assert all((det["split"] == sp).sum() <= n for sp, n in caps.items())


def test_latest_training_set_goes_by_recorded_creation_time_not_mtime(tmp_path: Path) -> None:
    """Training sets record ``created_at``; a later touch or copy of an older set must not
    make it the newest."""
    import os

    from pipelines.validate.training_set import latest_training_set

    s = Settings(root=tmp_path)
    root = Path(s.data_dir) / "training-sets"
    for name, created in (("old", "2026-11-01T10:00:00Z"), ("new", "2026-11-02T09:00:00Z")):
        (root / name).mkdir(parents=True)
        (root / name / "training_set.json").write_text(json.dumps({"id": name, "created_at": created}))
    later = os.stat(root / "new" / "training_set.json").st_mtime + 3600
    os.utime(root / "old" / "training_set.json", (later, later))  # the old one touched last
    assert latest_training_set(s).name == "new"


def test_the_index_finds_an_image_for_every_catalog_product(built: dict) -> None:
    """The search index embeds each catalog product's first shop shot: the training set's
    catalog names it, relative to the training set's data root. (Through the embedder
    manifest instead, whose identities are SKUs and whose real photos have none, it found
    no product of a crawled catalog at all, and the demo's index build failed.)"""
    import pandas as pd

    from pipelines.index.embed import catalog_images

    cat = pd.read_parquet(built["ts"] / "catalog.parquet")
    df = catalog_images(built["ts"] / "catalog.parquet")
    assert len(df) == cat["image"].notna().sum() > 0.9 * len(cat)
    assert set(df["product_id"]) == set(cat.loc[cat["image"].notna(), "product_id"])
    assert all(Path(p).is_file() for p in df["image"])
