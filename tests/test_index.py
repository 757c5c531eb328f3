"""Search index: sizing, embed, build/tune/persist/load, updates, category filter, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.index.sizing import MIN_POINTS_PER_CENTROID, plan_index
from tests.helpers.catalogs import make_catalog


@pytest.fixture()
def pixels():
    from pipelines.index.embed import pixel_embed_fn

    return pixel_embed_fn(dim=32, size=8)


@pytest.mark.parametrize("n", [300, 10_000, 1_000_000])
def test_sizing_rules(n: int) -> None:
    for d in (32, 128, 512):
        p = plan_index(n, d)
        assert 1 <= p.nlist <= n // 8
        assert p.train_size >= MIN_POINTS_PER_CENTROID * p.nlist, p
        assert p.train_size <= n and d % p.m == 0 and p.m <= d // 4
        assert f"IVF{p.nlist}" in p.factory
    if n == 1_000_000:
        assert plan_index(n, 128).nlist == 4096
    if n == 300:
        assert plan_index(n, 128).refine == "Flat"


def test_embed_catalog_mapping(tmp_path, pixels) -> None:
    from pipelines.index.build import CATEGORY_SHIFT
    from pipelines.index.embed import embed_catalog

    cat = make_catalog(tmp_path, n=30)
    v, ids = embed_catalog(cat, tmp_path, pixels, batch_size=7, progress=False)
    assert v.shape == (30, 32) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert list(ids.columns) == ["vector_id", "product_id", "image", "category"]
    assert ids["vector_id"].is_unique and set(ids["product_id"]) == {f"p{i}" for i in range(30)}
    codes = ids.attrs["categories"]
    assert all((vid >> CATEGORY_SHIFT) == codes[c] for vid, c in zip(ids["vector_id"], ids["category"], strict=True))
    v2, _ = embed_catalog(cat, tmp_path, pixels, batch_size=30, progress=False)
    assert np.allclose(v, v2, atol=1e-6)  # deterministic, independent of batching


def _built(tmp_path, pixels, n=240, target=0.95):
    from pipelines.index.build import build_index
    from pipelines.index.embed import embed_catalog

    cat = make_catalog(tmp_path, n=n)
    v, ids = embed_catalog(cat, tmp_path, pixels, progress=False)
    index, meta = build_index(v, ids["vector_id"].to_numpy(), recall_target=target)
    meta.update(
        {
            "embedder_version": pixels.version,
            "snapshot_id": "snap1",
            "categories": ids.attrs["categories"],
            "next_seq": ids.attrs["next_seq"],
            "ntotal_at_build": index.ntotal,
        }
    )
    return cat, v, ids, index, meta


def test_build_tune_persist_load_round_trip(tmp_path, pixels) -> None:
    from pipelines.index.store import load_index, save_index
    from pipelines.index.tune import exact_knn, recall_at_k

    cat, v, ids, index, meta = _built(tmp_path, pixels)
    assert meta["recall"] >= 0.95 and meta["recall_reached"]
    assert meta["curve"] and all({"nprobe", "k_factor", "recall"} <= set(r) for r in meta["curve"])
    # Recall against exact search on fresh held-out queries also meets the target.
    rng = np.random.default_rng(5)
    q = v[rng.choice(len(v), 60, replace=False)] + rng.standard_normal((60, v.shape[1])).astype(np.float32) * 0.01
    _, truth = exact_knn(v, q, 10, base_ids=ids["vector_id"].to_numpy())
    assert recall_at_k(index.search(q, 10)[1], truth) >= 0.9
    from pipelines.index.embed import product_cards

    path = save_index(index, ids, meta, out=tmp_path / "idx", products=product_cards(cat))
    loaded = load_index(path)
    assert loaded.meta["factory"] == meta["factory"] and loaded.meta["bytes_per_vector"] > 0
    D1, I1 = index.search(q, 10)
    D2, I2 = loaded.index.search(q, 10)
    assert np.array_equal(I1, I2) and np.allclose(D1, D2)
    hits = loaded.search(v[:1], k=5)[0]
    assert hits[0]["product_id"] == ids["product_id"][0] and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    # Hits carry the product card (what the search API shows); absent catalog columns are None.
    n = int(hits[0]["product_id"][1:])
    assert hits[0]["title"] == f"product {n}" and hits[0]["price"] == 10.0 + n
    assert hits[0]["image_url"] == f"http://mall/img/p{n}.jpg" and hits[0]["mall"] is None


def test_incremental_add_remove(tmp_path, pixels) -> None:
    from pipelines.index.store import load_index, save_index
    from pipelines.index.update import update_index

    cat, v, ids, index, meta = _built(tmp_path, pixels)
    old = save_index(index, ids, meta, out=tmp_path / "v1")
    df = pd.read_parquet(cat)
    make_catalog(tmp_path / "more", n=12, start=1000, seed=3)
    extra = pd.read_parquet(tmp_path / "more" / "catalog.parquet")
    extra["image"] = [str(tmp_path / "more" / p) for p in extra["image"]]
    removed = {"p0", "p1", "p7"}
    pd.concat([df[~df["product_id"].isin(removed)], extra]).to_parquet(cat, index=False)
    res = update_index(old, cat, tmp_path, pixels, out=tmp_path / "v2")
    assert res["rebuild"] == [] and res["added"] == 12 and res["removed"] == 3
    new = load_index(res["path"])
    first = load_index(old)
    assert new.index.ntotal == len(v) - 3 + 12 and new.meta["parent"] == first.meta["version"]
    assert new.meta["version"] != first.meta["version"]
    assert not removed & set(new.ids["product_id"])
    assert load_index(old).index.ntotal == len(v)  # the old version is untouched
    # A new product is found by its own image; a removed one never comes back.
    from pipelines.index.embed import embed_images

    q = embed_images([extra["image"][0]], pixels, progress=False)
    assert new.search(q, k=3)[0][0]["product_id"] == "p1000"
    q0 = v[ids["product_id"] == "p0"]
    assert all(h["product_id"] not in removed for h in new.search(q0, k=20)[0])
    # New ids stay category-contiguous and never reuse an old id (not even a removed one's);
    # products that stayed keep theirs.
    from pipelines.index.build import CATEGORY_SHIFT

    assert new.ids["vector_id"].is_unique
    old_ids = dict(zip(first.ids["product_id"], first.ids["vector_id"], strict=True))
    added = new.ids[new.ids["product_id"].isin(set(extra["product_id"]))]
    assert len(added) == 12 and not set(added["vector_id"]) & set(old_ids.values())
    kept = new.ids[~new.ids["product_id"].isin(set(extra["product_id"]))]
    assert all(old_ids[p] == vid for p, vid in zip(kept["product_id"], kept["vector_id"], strict=True))
    codes = new.meta["categories"]
    assert all(
        int(vid) >> CATEGORY_SHIFT == codes[c] for vid, c in zip(new.ids["vector_id"], new.ids["category"], strict=True)
    )
    # Another embedder -> rebuild, nothing written.
    from pipelines.index.embed import pixel_embed_fn

    again = update_index(res["path"], cat, tmp_path, pixel_embed_fn(dim=32, size=8, seed=9))
    assert again["path"] is None and "embedder changed" in again["rebuild"][0]


def test_drift_triggers_rebuild() -> None:
    from pipelines.index.update import rebuild_reasons

    meta = {"embedder_version": "e1", "imbalance_at_build": 1.2, "ntotal_at_build": 1000}
    assert rebuild_reasons(meta, "e1", 1.3, 1100) == []
    assert "drift" in rebuild_reasons(meta, "e1", 2.0, 1100)[0]
    assert "size changed" in rebuild_reasons(meta, "e1", 1.2, 2500)[0]


def test_category_filter(tmp_path, pixels) -> None:
    from pipelines.index.store import load_index, save_index

    cat, v, ids, index, meta = _built(tmp_path, pixels)
    loaded = load_index(save_index(index, ids, meta, out=tmp_path / "idx"))
    q = v[:20]
    for c in ("shirt", "bag"):
        res = loaded.search(q, k=10, category=c)
        for hits in res:
            assert len(hits) == 10 and {h["category"] for h in hits} == {c}
        # The filtered results are the exact nearest products of that category.
        sub = ids["category"] == c
        d = ((q[:, None, :] - v[sub.to_numpy()][None]) ** 2).sum(-1)
        exact = ids["product_id"][sub].to_numpy()[np.argsort(d, axis=1)[:, :10]]
        got = [[h["product_id"] for h in hits] for hits in res]
        assert np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)]) >= 0.9
    two = loaded.search(q, k=10, category=["shirt", "bag"])
    assert all({h["category"] for h in hits} <= {"shirt", "bag"} for hits in two)
    assert loaded.search(q[:2], k=5, category="hats") == [[], []]


def test_register_in_mlflow_and_load_champion(tmp_path, pixels) -> None:
    from pipelines.index.store import champion_uri, load_index, log_index, save_index
    from pipelines.settings import Settings

    s = Settings(root=tmp_path / "proj")
    s.ensure_dirs()
    cat, v, ids, index, meta = _built(tmp_path, pixels)
    path = save_index(index, ids, meta, out=tmp_path / "idx")
    logged = log_index(path, s=s)
    assert logged["version"] == "1"
    loaded = load_index(champion_uri(), s=s)
    assert loaded.meta["version"] == load_index(path).meta["version"] and loaded.meta["version"].startswith("idx-")
    assert np.array_equal(loaded.index.search(v[:5], 10)[1], index.search(v[:5], 10)[1])


def test_bundle_takes_only_the_index_built_for_the_champion_models(tmp_path, pixels, monkeypatch) -> None:
    """Deploy bundles the ``tailor-index@champion`` only when it was built with the champion
    embedder (on whole catalog shots, the default; or on the champion detector's crops when
    ``embed.crop_with`` names it) and its catalog tags with the champion tagger; otherwise it
    refuses, naming the fix."""
    from pipelines.deploy import bundle
    from pipelines.deploy.bundle import champion_index
    from pipelines.index.store import log_index, save_index
    from pipelines.settings import Settings

    s = Settings(root=tmp_path / "proj")
    s.ensure_dirs()
    champs = {"embedder": {"version": "3"}, "detector": {"version": "2"}, "tagger": {"version": "4"}}
    with pytest.raises(RuntimeError, match="no tailor-index@champion"):
        champion_index(champs, s)
    _, _, ids, index, meta = _built(tmp_path, pixels, n=120)
    # catalog tags from another tagger than the champion: attribute search would disagree with /search
    old_tags = {**meta, "embedder_version": "tailor-embedder/v3", "attributes": {"tagger_version": "tailor-tagger/v3"}}
    log_index(save_index(index, ids, old_tags, out=tmp_path / "old-tags"), s=s)
    with pytest.raises(RuntimeError, match="catalog tags of tailor-tagger/v3, .*champion tagger is tailor-tagger/v4"):
        champion_index(champs, s)
    meta = {**meta, "attributes": {"tagger_version": "tailor-tagger/v4"}}
    log_index(save_index(index, ids, {**meta, "embedder_version": "tailor-embedder/v2"}, out=tmp_path / "old"), s=s)
    with pytest.raises(RuntimeError, match="built for tailor-embedder/v2, .*rebuild_index"):
        champion_index(champs, s)
    log_index(save_index(index, ids, {**meta, "embedder_version": "tailor-embedder/v3"}, out=tmp_path / "new"), s=s)
    assert json.loads((champion_index(champs, s) / "meta.json").read_text())["embedder_version"] == "tailor-embedder/v3"
    # catalog images cropped by the detector: the detector's version must match as well
    monkeypatch.setattr(bundle, "catalog_crop_uri", lambda: "models:/tailor-detector@champion")
    with pytest.raises(RuntimeError, match="champions are tailor-embedder/v3\\+crop:tailor-detector/v2"):
        champion_index(champs, s)
    stale = {**meta, "embedder_version": "tailor-embedder/v3+crop:tailor-detector/v1"}
    log_index(save_index(index, ids, stale, out=tmp_path / "stale"), s=s)
    with pytest.raises(RuntimeError, match="built for tailor-embedder/v3\\+crop:tailor-detector/v1.*rebuild_index"):
        champion_index(champs, s)
    fresh = {**meta, "embedder_version": "tailor-embedder/v3+crop:tailor-detector/v2"}
    log_index(save_index(index, ids, fresh, out=tmp_path / "fresh"), s=s)
    d = champion_index(champs, s)
    assert json.loads((d / "meta.json").read_text())["embedder_version"] == fresh["embedder_version"]


def test_plan_without_champions_says_so(tmp_path, monkeypatch) -> None:
    """Before any model is promoted the index plan stops with NoChampion (the DAG skips on it)."""
    from pipelines.index import stages
    from pipelines.settings import get_settings

    monkeypatch.setenv("TAILOR_ROOT", str(tmp_path))
    get_settings.cache_clear()
    try:
        get_settings().ensure_dirs()
        with pytest.raises(stages.NoChampion, match="tailor-embedder@champion.*run retrain_models first"):
            stages._embedder_version("champion", stages.load_config())
    finally:
        get_settings.cache_clear()


def test_tuner_stops_when_recall_plateaus() -> None:
    """Codes that cannot reach the target (2-bit RaBitQ vs Recall@10 0.999): the tuner stops
    walking nprobe once recall stops growing instead of scanning up to every list."""
    import faiss

    from pipelines.index.build import VectorIndex
    from pipelines.index.synthetic import clustered_vectors
    from pipelines.index.tune import _plateaued, exact_knn, nprobe_grid, tune

    assert not _plateaued([{"k_factor": 1, "recall": r} for r in (0.5, 0.7, 0.8, 0.85)], 1)
    assert _plateaued([{"k_factor": 1, "recall": r} for r in (0.5, 0.8, 0.8, 0.8005, 0.8008)], 1)

    x = clustered_vectors(20_500, 64, seed=3)
    xb, q = x[:20_000], x[20_000:]
    base = faiss.index_factory(64, "IVF256,RaBitQ2")
    base.train(xb)
    base.add_with_ids(xb, np.arange(len(xb)))
    index = VectorIndex(base=base)
    _, truth = exact_knn(xb, q, 10)
    result = tune(index, q, truth, target=0.999)
    recalls = [r["recall"] for r in result["curve"]]
    assert not result["reached"] and 0.5 < result["recall"] < 0.999
    assert len(recalls) < len(nprobe_grid(256))  # stopped early ...
    assert recalls[-1] - recalls[-4] < 0.003  # ... on a plateau
    assert result["recall"] == max(recalls) and index.nprobe == result["nprobe"]


def test_catalog_shots_embed_whole_and_from_the_training_feature_cache(small_world: Path, tmp_path: Path, monkeypatch):
    """The default crop policy embeds a catalog image whole, drawn as training drew shop shots;
    by file it reads the frozen trunk features training cached (computed and cached on a miss),
    and gives the vectors the image path gives (fp16 cache: to 1e-2)."""
    import torch

    from pipelines.index.embed import embed_images, shot_embed_fn
    from pipelines.settings import get_settings
    from pipelines.train import build_model
    from pipelines.train.config import resolve_config

    monkeypatch.setenv("TAILOR_CACHE_DIR", str(tmp_path / "cache"))
    get_settings.cache_clear()
    torch.manual_seed(0)
    cfg = resolve_config("embedder", "demo", {"workers": 0})
    model = build_model("embedder", cfg).eval()
    fn = shot_embed_fn(model)
    assert hasattr(fn, "embed_paths")
    paths = sorted(str(p) for p in (small_world / "images" / "shop").glob("*.jpg"))[:6]
    by_path = embed_images(paths, fn, progress=False)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == len(paths)  # cached on the miss
    again = embed_images(paths, fn, progress=False)
    np.testing.assert_allclose(again, by_path, atol=1e-6)
    from PIL import Image

    by_image = fn([Image.open(p).convert("RGB") for p in paths])
    by_image /= np.linalg.norm(by_image, axis=1, keepdims=True)
    np.testing.assert_allclose(by_path, by_image, atol=2e-2)
    assert (by_path @ by_image.T).argmax(1).tolist() == list(range(len(paths)))
    get_settings.cache_clear()


def test_an_empty_catalog_or_no_training_set_stops_the_index_plan_with_nothing_written(
    tmp_path: Path, monkeypatch
) -> None:
    from pipelines.index.stages import plan_stage
    from pipelines.settings import Settings

    s = Settings(root=tmp_path)
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"product_id": pd.Series([], dtype=str), "category": pd.Series([], dtype=str)}).to_parquet(empty)
    with pytest.raises(ValueError, match="has no products; nothing to index"):
        plan_stage({"embedder": "pixels", "catalog": str(empty), "images_root": str(tmp_path)}, s)
    with pytest.raises(FileNotFoundError, match="no training set under"):
        plan_stage({"embedder": "pixels"}, s)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_stage({"embedder": "pixels", "catalog": str(tmp_path / "nope.parquet")}, s)
    assert not s.index_work_dir.exists() and not s.index_dir.exists()
