"""The tables the suites validate, built from a crawl snapshot (and an annotation import).

Each table has one key column (named in :data:`KEYS`) so that GX can report unexpected rows
by key and the quarantine can name them. Derived columns (``min_side``, ``aspect_ratio``,
``exact_dup_of`` ...) are computed here so the suites stay plain built-in expectations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.validate.config import vocabulary_of

#: table name -> the column identifying a row (GX ``unexpected_index_column_names``).
KEYS = {
    "products": "product_id",
    "images": "image_key",
    "labels": "product_id",
    "label_classes": "class_key",
    "annotations": "annotation_id",
    "snapshot": "snapshot",
}

PRODUCT_FIELDS = ["product_id", "mall", "url", "title", "brand", "price", "currency",
                  "category", "fetched_at"]


def snapshot_meta(snapshot: Path) -> dict[str, Any]:
    """``snapshot.json`` of a snapshot (name, content hash, counts)."""
    return json.loads((Path(snapshot) / "snapshot.json").read_text())


def read_snapshot(snapshot: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Live products (not flagged ``removed``) and the images linked to them."""
    snapshot = Path(snapshot)
    products = pd.read_parquet(snapshot / "products.parquet")
    images = pd.read_parquet(snapshot / "images.parquet")
    if "removed" in products.columns:
        # Removed products are history carried by incremental crawls, not catalog rows.
        products = products[~products["removed"].astype(bool)]
    products = products.reset_index(drop=True)
    if "product_id" in products.columns and "product_id" in images.columns:
        images = images[images["product_id"].isin(set(products["product_id"]))]
    return products, images.reset_index(drop=True)


def products_table(products: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Product fields under validation plus ``taxonomy_category`` (``<vocabulary>/<category>``)."""
    df = products[[c for c in PRODUCT_FIELDS if c in products.columns]
                  + [c for c in products.columns if c not in PRODUCT_FIELDS
                     and c in ("sku", "n_listings")]].copy()
    if "product_id" not in df.columns:
        df.insert(0, "product_id", [f"row{i}" for i in range(len(df))])
    if "category" in df.columns and "mall" in df.columns:
        df["taxonomy_category"] = [f"{vocabulary_of(str(m), cfg)}/{c}"
                                   for m, c in zip(df["mall"], df["category"], strict=True)]
    return df


def taxonomy_keys(cfg: dict[str, Any]) -> list[str]:
    """Every ``<vocabulary>/<label>`` a mall may list (trainable labels + ignored ones)."""
    keys = []
    for name, labels in cfg["vocabularies"].items():
        keys += [f"{name}/{x}" for x in [*labels, *cfg.get("ignored_labels", [])]]
    return sorted(set(keys))


def vocabulary_keys(cfg: dict[str, Any]) -> list[str]:
    """Every trainable ``<vocabulary>/<label>``."""
    return sorted({f"{n}/{x}" for n, labels in cfg["vocabularies"].items() for x in labels})


def images_table(images: pd.DataFrame) -> pd.DataFrame:
    """Image links with ``min_side``, ``aspect_ratio``, ``exact_dup_of`` and ``is_near_dup``."""
    df = images.copy()
    df = df.sort_values(["product_id", "position"] if "position" in df.columns else ["product_id"],
                        kind="stable").reset_index(drop=True)
    df.insert(0, "image_key", df["product_id"].astype(str) + "|" + df["sha256"].astype(str).str[:16])
    if {"width", "height"} <= set(df.columns):
        df["min_side"] = df[["width", "height"]].min(axis=1)
        df["aspect_ratio"] = (df["width"] / df["height"].where(df["height"] > 0)).round(4)
    # The same bytes linked again (by another product, or twice): only the repeats are dups.
    df["exact_dup_of"] = _exact_dups(df)
    # A near-duplicate: its near-dup group also holds an image of another product.
    if "near_dup_group" in df.columns:
        owners = df.groupby("near_dup_group")["product_id"].nunique()
        df["is_near_dup"] = df["near_dup_group"].map(owners).fillna(1).gt(1).astype(float)
    else:
        df["is_near_dup"] = 0.0
    return df


def _exact_dups(df: pd.DataFrame) -> list[str | None]:
    """For each row, the key of the first earlier row with the same sha256 (None if first)."""
    first: dict[str, str] = {}
    out: list[str | None] = []
    for sha, key in zip(df["sha256"], df["image_key"], strict=True):
        if sha in first:
            out.append(first[sha])
        else:
            first[sha] = key
            out.append(None)
    return out


def labels_tables(products: pd.DataFrame, cfg: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-product labels (``label_key`` = ``<vocabulary>/<label>``) and per-class counts.

    Class counts are over trainable labels only, so the imbalance ratio is the one the
    training set will have before balancing.
    """
    if not {"product_id", "category", "mall"} <= set(products.columns):
        empty = pd.DataFrame({"product_id": [], "vocabulary": [], "label": [], "label_key": []})
        return empty, pd.DataFrame({"class_key": [], "n": [], "imbalance_ratio": []})
    vocab = [vocabulary_of(str(m), cfg) for m in products["mall"]]
    labels = pd.DataFrame({"product_id": products["product_id"].astype(str), "mall": products["mall"],
                           "vocabulary": vocab, "label": products["category"]})
    labels["label_key"] = labels["vocabulary"] + "/" + labels["label"].astype(str)
    ok = labels[labels["label_key"].isin(set(vocabulary_keys(cfg)))]
    rows = []
    for v, grp in ok.groupby("vocabulary"):
        counts = grp["label"].value_counts()
        ratio = float(counts.max() / counts.min()) if len(counts) else 1.0
        for lab, n in counts.items():
            rows.append({"class_key": f"{v}/{lab}", "vocabulary": v, "label": lab, "n": int(n),
                         "imbalance_ratio": round(ratio, 3)})
    classes = pd.DataFrame(rows, columns=["class_key", "vocabulary", "label", "n", "imbalance_ratio"])
    return labels, classes


def snapshot_table(name: str, products: pd.DataFrame, previous_rows: int | None,
                   now: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row: product count, the previous snapshot's, the drop share and data age in hours."""
    rows = len(products)
    drop = 0.0 if not previous_rows else max(0.0, (previous_rows - rows) / previous_rows)
    now = now or pd.Timestamp.now(tz="UTC")
    age = None
    if "fetched_at" in products.columns and len(products):
        newest = pd.to_datetime(products["fetched_at"], utc=True).max()
        age = round((now - newest).total_seconds() / 3600, 3)
    return pd.DataFrame([{"snapshot": name, "rows": rows, "previous_rows": previous_rows,
                          "row_drop": round(drop, 4), "age_hours": age}])


def annotations_table(import_dir: Path) -> pd.DataFrame:
    """One row per annotation of an import: box inside its image, mask area, category id."""
    from pycocotools import mask as mask_utils

    coco = json.loads((Path(import_dir) / "coco.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    rows = []
    for a in coco["annotations"]:
        im = images.get(a["image_id"], {})
        w, h = im.get("width", 0), im.get("height", 0)
        x, y, bw, bh = (list(a.get("bbox") or []) + [0, 0, 0, 0])[:4]
        inside = bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w + 0.5 and y + bh <= h + 0.5
        seg = a.get("segmentation")
        area = 0
        if isinstance(seg, dict) and seg.get("counts") is not None:
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode()
            area = int(mask_utils.area(rle))
        elif isinstance(seg, list) and seg:
            area = int(a.get("area") or 0)
        rows.append({"annotation_id": int(a["id"]), "image_sha256": im.get("sha256"),
                     "category_id": int(a.get("category_id", -1)), "bbox_inside": bool(inside),
                     "mask_area": area})
    return pd.DataFrame(rows, columns=["annotation_id", "image_sha256", "category_id",
                                       "bbox_inside", "mask_area"])
