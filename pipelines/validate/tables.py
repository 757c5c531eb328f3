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

from models.taxonomy import to_category

#: table name -> the column identifying a row (GX ``unexpected_index_column_names``).
KEYS = {
    "products": "product_id",
    "images": "image_key",
    "labels": "product_id",
    "label_classes": "class_key",
    "annotations": "annotation_id",
    "snapshot": "snapshot",
    "malls": "mall",
}

PRODUCT_FIELDS = ["product_id", "mall", "url", "title", "brand", "price", "currency", "category", "fetched_at"]


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
    """Product fields under validation plus ``taxonomy_category``: the mall's label normalised
    with :func:`models.taxonomy.to_category`, or the label itself where it maps to no category
    (a known non-garment label passes here and is quarantined by the labels suite; an unknown
    one fails here too)."""
    df = products[
        [c for c in PRODUCT_FIELDS if c in products.columns]
        + [c for c in products.columns if c not in PRODUCT_FIELDS and c in ("sku", "n_listings")]
    ].copy()
    if "product_id" not in df.columns:
        df.insert(0, "product_id", [f"row{i}" for i in range(len(df))])
    if "category" in df.columns and "mall" in df.columns:
        df["taxonomy_category"] = [normalised_or_label(c) for c in df["category"]]
    return df


def normalised_or_label(label: Any) -> str:
    """The taxonomy category of a mall label, else the label as text (what a check reports)."""
    return to_category(label) or str(label)


def taxonomy_keys(cfg: dict[str, Any]) -> list[str]:
    """Every value a product's ``taxonomy_category`` may take: taxonomy categories + the
    known non-garment labels (``ignored_labels``)."""
    return sorted({*vocabulary_keys(cfg), *cfg.get("ignored_labels", [])})


def vocabulary_keys(cfg: dict[str, Any]) -> list[str]:
    """Every trainable label: the product taxonomy's categories."""
    return sorted({str(x) for x in cfg["vocabularies"]["taxonomy"]})


def curate_categories(products: pd.DataFrame) -> pd.DataFrame:
    """Catalog rows with the mall's own label in ``label`` and its taxonomy category in
    ``category`` (None where the label maps to none; validation quarantines those rows)."""
    if "category" not in products.columns:
        return products
    out = products.copy()
    raw = products["label"] if "label" in products.columns else products["category"]
    out["label"] = raw
    out["category"] = [to_category(x) for x in raw]
    return out


def images_table(images: pd.DataFrame) -> pd.DataFrame:
    """Image links with ``min_side``, ``aspect_ratio``, ``exact_dup_of`` and ``is_near_dup``."""
    df = images.copy()
    df = df.sort_values(
        ["product_id", "position"] if "position" in df.columns else ["product_id"], kind="stable"
    ).reset_index(drop=True)
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
    """Per-product labels and per-class counts.

    Each product's ``label`` (the mall's own) is normalised to its taxonomy ``category``;
    ``label_key`` is that category, or the label itself where it maps to none (``Not sure``,
    ``Skip``, ``Other``, unknown labels), which the labels suite quarantines naming the label.
    Class counts are per taxonomy category over trainable labels only, so the imbalance
    ratio is the one the training set will have before balancing.
    """
    if not {"product_id", "category", "mall"} <= set(products.columns):
        empty = pd.DataFrame({"product_id": [], "mall": [], "label": [], "category": [], "label_key": []})
        return empty, pd.DataFrame({"class_key": [], "n": [], "imbalance_ratio": []})
    labels = pd.DataFrame(
        {
            "product_id": products["product_id"].astype(str),
            "mall": products["mall"],
            "label": products["category"],
            "category": [to_category(x) for x in products["category"]],
        }
    )
    labels["label_key"] = [normalised_or_label(x) for x in labels["label"]]
    ok = labels[labels["label_key"].isin(set(vocabulary_keys(cfg)))]
    counts = ok["label_key"].value_counts()
    ratio = float(counts.max() / counts.min()) if len(counts) else 1.0
    rows = [
        {"class_key": str(cat), "label": str(cat), "n": int(n), "imbalance_ratio": round(ratio, 3)}
        for cat, n in counts.items()
    ]
    classes = pd.DataFrame(rows, columns=["class_key", "label", "n", "imbalance_ratio"])
    return labels, classes


def snapshot_table(
    name: str, products: pd.DataFrame, previous_rows: int | None, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """One row: product count, the previous snapshot's, the drop share and data age in hours."""
    rows = len(products)
    drop = 0.0 if not previous_rows else max(0.0, (previous_rows - rows) / previous_rows)
    now = now or pd.Timestamp.now(tz="UTC")
    age = None
    if "fetched_at" in products.columns and len(products):
        newest = pd.to_datetime(products["fetched_at"], utc=True).max()
        age = round((now - newest).total_seconds() / 3600, 3)
    return pd.DataFrame(
        [{"snapshot": name, "rows": rows, "previous_rows": previous_rows, "row_drop": round(drop, 4), "age_hours": age}]
    )


def annotations_table(import_dir: Path) -> pd.DataFrame:
    """One row per annotation of an import: box inside its image, mask area, category id and
    ``category``: the taxonomy category of the id's COCO category name, or ``category_id <id>``
    where the id names no category or the name maps to none."""
    from pycocotools import mask as mask_utils

    coco = json.loads((Path(import_dir) / "coco.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    names = {c["id"]: c.get("name") for c in coco.get("categories") or []}
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
        cid = int(a.get("category_id", -1))
        rows.append(
            {
                "annotation_id": int(a["id"]),
                "image_sha256": im.get("sha256"),
                "category_id": cid,
                "category": to_category(names.get(cid)) or f"category_id {cid}",
                "bbox_inside": bool(inside),
                "mask_area": area,
            }
        )
    return pd.DataFrame(
        rows, columns=["annotation_id", "image_sha256", "category_id", "category", "bbox_inside", "mask_area"]
    )
