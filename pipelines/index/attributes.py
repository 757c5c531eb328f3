"""Catalog attributes and the catalog map, stored with an index version.

Attribute search (``GET /products``, ``POST /search/attributes``) needs every product's
tags, and the demo page's map needs a 2-D layout. Both are computed here when an index
version is built, from the same product shots the index embedded:

* tags: the champion tagger on each whole product shot (drawn as in training,
  :func:`pipelines.garments.garment_crop`); only the heads that apply to the product's
  category (:data:`models.taxonomy.APPLICABLE`) are kept;
* layout: a PCA of the embeddings to 2-D (``map.json`` keeps the mean and the two
  components, so the service projects a query photo onto the same plane).

Files written into the index directory (read by :mod:`bentos.catalog`):
``attributes.parquet`` (one row per product: card fields, ``category``, tag columns, ``x``,
``y``), ``attr_vectors.npy`` (the embeddings, same row order, for "similar by attributes"
tie-breaks) and ``map.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ATTRIBUTES_FILE = "attributes.parquet"
VECTORS_FILE = "attr_vectors.npy"
MAP_FILE = "map.json"


def _tag_rows(
    tagger: Any, images: list[str], batch: int = 64, progress: bool = True, use_cache: bool = True
) -> list[dict[str, tuple[str, float]]]:
    """``[{head: (value, prob)}]`` of the tagger on whole product shots; through the training
    feature cache where the tagger trains from one (a catalog in the training set costs only
    the heads)."""
    import pandas as pd
    import torch

    from pipelines.garments import TRAIN_CONTEXT, garment_crop
    from pipelines.train.features import cache_enabled, prefix_features

    cfg = dict(getattr(tagger, "tailor_config", {}) or {})
    size = int(cfg.get("crop_size", 224))
    logits: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        if use_cache and cache_enabled(cfg) and hasattr(tagger, "from_prefix"):
            feats = prefix_features(
                tagger, pd.DataFrame({"image": images, "bbox": [None] * len(images)}), cfg, progress=progress
            )
            chunks = (tagger.from_prefix(feats[i : i + 512]) for i in range(0, len(feats), 512))
        else:
            from PIL import Image

            def crops(i: int) -> torch.Tensor:
                arr = []
                for p in images[i : i + batch]:
                    with Image.open(p) as im:
                        arr.append(garment_crop(im.convert("RGB"), None, size, TRAIN_CONTEXT))
                return torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float().div(255.0)

            chunks = (tagger(crops(i)) for i in range(0, len(images), batch))
        for out in chunks:
            for head, lg in out.items():
                logits.setdefault(head, []).append(lg.softmax(1))
    rows: list[dict[str, tuple[str, float]]] = [{} for _ in images]
    for head, parts in logits.items():
        conf, idx = torch.cat(parts).max(1)
        for j in range(len(images)):
            rows[j][head] = (tagger.vocab[head][int(idx[j])], float(conf[j]))
    return rows


def pca_2d(vectors: np.ndarray) -> dict[str, Any]:
    """Mean, the first two principal axes and their explained variance share of ``vectors``."""
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    if len(x) < 3:
        comps = np.eye(2, x.shape[1])
        share = [0.0, 0.0]
    else:
        _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        comps = vt[:2]
        # the sign of an SVD axis is arbitrary: fix it so re-builds draw the same picture
        comps *= np.where(comps[np.arange(len(comps)), np.abs(comps).argmax(1)] < 0, -1.0, 1.0)[:, None]
        share = (sv[:2] ** 2 / max(float((sv**2).sum()), 1e-12)).tolist()
    return {"mean": mean.tolist(), "components": comps.tolist(), "explained_variance": share}


def project(mapping: dict[str, Any], vectors: np.ndarray) -> np.ndarray:
    """(N, 2) coordinates of ``vectors`` on the map :func:`pca_2d` computed."""
    return (np.asarray(vectors, np.float64) - np.asarray(mapping["mean"])) @ np.asarray(mapping["components"]).T


def write_attributes(
    index_dir: Path,
    cards: Any,
    images: list[str],
    vectors: np.ndarray,
    tagger: Any | None,
    tagger_version: str | None,
    progress: bool = True,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Tag each product, lay the catalog out in 2-D and write the three files into ``index_dir``.

    ``cards``: DataFrame with ``product_id``, the card fields and ``category`` (the mall's),
    one row per entry of ``images`` and ``vectors``. Without a tagger (an index built with the
    pixel embedder) the tag columns stay empty and attribute filters match nothing but
    category. ``use_cache=False`` runs the tagger on the images instead of the training
    feature cache. Returns the summary also stored in ``map.json``.
    """

    from models.taxonomy import APPLICABLE, ATTRIBUTES, CATEGORIES

    index_dir = Path(index_dir)
    df = cards.reset_index(drop=True).copy()
    if len(df) != len(images) or len(df) != len(vectors):
        raise ValueError(f"{len(df)} cards, {len(images)} images and {len(vectors)} vectors: one each per product")
    tags = (
        _tag_rows(tagger, images, progress=progress, use_cache=use_cache)
        if tagger is not None and len(images)
        else None
    )
    df["tagger_category"] = [t["category"][0] for t in tags] if tags else None
    df["category_score"] = [round(t["category"][1], 4) for t in tags] if tags else None
    # The mall's category when it is one of the taxonomy's, else the tagger's.
    known = set(CATEGORIES)
    df["category"] = [
        c if c in known else (tc or c) for c, tc in zip(df["category"], df["tagger_category"], strict=True)
    ]
    for head in ATTRIBUTES:
        df[head] = (
            [
                t[head][0] if head in t and head in APPLICABLE.get(c, ()) else None
                for t, c in zip(tags, df["category"], strict=True)
            ]
            if tags
            else None
        )
    mapping = pca_2d(vectors)
    xy = project(mapping, vectors) if len(vectors) else np.zeros((0, 2))
    df["x"], df["y"] = xy[:, 0].round(5), xy[:, 1].round(5)
    df = df.astype(object).where(df.notna(), None)
    df.to_parquet(index_dir / ATTRIBUTES_FILE, index=False)
    np.save(index_dir / VECTORS_FILE, np.asarray(vectors, np.float32))
    summary = {
        **mapping,
        "method": "pca",
        "n": int(len(df)),
        "tagger_version": tagger_version,
        "tagged": tags is not None,
    }
    (index_dir / MAP_FILE).write_text(json.dumps(summary))
    return summary


def index_attributes(
    index_dir: Path, catalog: Path, embed_fn: Any, tagger: Any | None, tagger_version: str | None, progress: bool = True
) -> dict[str, Any]:
    """:func:`write_attributes` for a saved index version: every product it holds, its image
    from the index's id table, its card from ``products.parquet`` (or the catalog)."""
    import pandas as pd

    from pipelines.index.embed import embed_images, product_cards

    index_dir = Path(index_dir)
    ids = pd.read_parquet(index_dir / "ids.parquet").drop_duplicates("product_id")
    cards_file = index_dir / "products.parquet"
    cards = pd.read_parquet(cards_file) if cards_file.exists() else product_cards(Path(catalog))
    df = ids[["product_id", "image", "category"]].merge(
        cards.drop(columns=["category"], errors="ignore"), on="product_id", how="left"
    )
    df = df[[Path(p).is_file() for p in df["image"]]].reset_index(drop=True)
    vectors = embed_images(df["image"].tolist(), embed_fn, progress=progress) if len(df) else np.zeros((0, 2))
    summary = write_attributes(
        index_dir, df.drop(columns=["image"]), df["image"].tolist(), vectors, tagger, tagger_version, progress
    )
    meta_file = index_dir / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"] = {
        "tagger_version": tagger_version,
        "n": summary["n"],
        "map": "pca",
        "explained_variance": summary["explained_variance"],
    }
    meta_file.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    return summary
