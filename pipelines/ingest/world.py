"""Manifest rows from a synthetic world's export (``annotations/coco.json`` + ``parsing/``).

Paths in the rows are relative to the world root. Ground truth comes from the COCO
annotations (true categories and attributes), not from the noisy product listing, and the
world's deliberately broken image files are left out (``broken.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: crops smaller than this (px, either side) carry too little signal to tag or embed
MIN_CROP = 12


def _load_coco(world: Path) -> dict[str, Any]:
    return json.loads((Path(world) / "annotations" / "coco.json").read_text())


def _broken(world: Path) -> set[str]:
    path = Path(world) / "broken.json"
    return {b["file"] for b in json.loads(path.read_text())} if path.exists() else set()


def world_manifest_rows(world: Path, min_crop: int = MIN_CROP) -> dict[str, Any]:
    """Rows per model (``detector``, ``parser``, ``tagger``, ``embedder``) as DataFrames.

    - detector / parser: one row per street or model image (``boxes`` JSON / ``label_png``);
    - tagger / embedder: one row per garment crop of every role (shop, model, street) with
      ground-truth category and attributes (attributes that do not apply are None);
    - ``group``: product id (scene stem for street images) so splits never share a product
      or a scene; ``source`` = ``synthetic``. No split/repeat/weight columns.
    """
    import pandas as pd

    from models.taxonomy import ATTRIBUTES, SYNTHETIC_TO_CATEGORY

    world = Path(world)
    coco = _load_coco(world)
    broken = _broken(world)
    # the world's categories as product-taxonomy categories (an unknown one fails below)
    cats = {c["id"]: SYNTHETIC_TO_CATEGORY.get(c["name"], c["name"]) for c in coco["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    det, par, tag, emb = [], [], [], []
    for img in coco["images"]:
        rel, role = img["file_name"], img["role"]
        if rel in broken:
            continue
        stem = Path(rel).stem
        anns = by_image.get(img["id"], [])
        # a model shot belongs to its product (stem p00012_1); a scene to itself
        group = stem.rsplit("_", 1)[0] if role == "model" else stem
        base = {"image": rel, "source": "synthetic", "width": img["width"], "height": img["height"], "role": role}
        if role in ("street", "model"):
            boxes = [{"bbox": [float(v) for v in a["bbox"]], "category": cats[a["category_id"]]} for a in anns]
            det.append({**base, "boxes": json.dumps(boxes), "group": group})
            par.append({**base, "label_png": f"parsing/{role}/{stem}.png", "group": group})
        for a in anns:
            x, y, w, h = a["bbox"]
            if w < min_crop or h < min_crop:
                continue
            attrs = a.get("attributes") or {}
            crop = {
                "image": rel,
                "source": "synthetic",
                "role": role,
                "bbox": json.dumps([float(v) for v in a["bbox"]]),
                "category": cats[a["category_id"]],
                "group": a["product_id"],
            }
            tag.append(
                {
                    **crop,
                    "identity": a["product_id"],
                    **{k: attrs.get(k) for k in ATTRIBUTES},
                    "visible_fraction": a.get("visible_fraction", 1.0),
                }
            )
            emb.append({**crop, "identity": a["product_id"]})
    assert all(c in SYNTHETIC_TO_CATEGORY.values() for c in cats.values())
    return {
        "detector": pd.DataFrame(det),
        "parser": pd.DataFrame(par),
        "tagger": pd.DataFrame(tag),
        "embedder": pd.DataFrame(emb),
    }
