"""Trivial baselines on a generated world: the world is a useful test bed only while
these fail. Used by tests and printed by ``tailor synth baselines``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image


def _iou_xywh(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _mean_rgb(img: np.ndarray) -> np.ndarray:
    return img.reshape(-1, 3).mean(axis=0)


def trivial_baselines(world: Path, max_queries: int = 800) -> dict[str, float]:
    """Score three trivial 'models' on the street scenes of ``world``.

    - majority class: every street garment gets the most frequent category (accuracy);
    - whole-image box: the full frame as the detection (share of garments with IoU >= 0.5);
    - mean-colour retrieval: rank shop shots by the distance between the mean RGB of a
      street garment's box and the centre of each shop shot (consumer-to-shop Recall@1/5).
    """
    coco = json.loads((world / "annotations" / "coco.json").read_text())
    images = {i["id"]: i for i in coco["images"]}
    street = [a for a in coco["annotations"] if images[a["image_id"]]["role"] == "street"]
    if not street:
        raise ValueError(f"{world} has no street-scene annotations")
    majority = Counter(a["category_id"] for a in street).most_common(1)[0][1] / len(street)
    whole = float(
        np.mean(
            [
                _iou_xywh([0, 0, images[a["image_id"]]["width"], images[a["image_id"]]["height"]], a["bbox"]) >= 0.5
                for a in street
            ]
        )
    )

    shop: dict[str, np.ndarray] = {}
    for line in (world / "products.jsonl").read_text().splitlines():
        p = json.loads(line)
        try:
            im = np.asarray(Image.open(world / p["images"][0]["file"]).convert("RGB"), dtype=np.float32)
        except (OSError, ValueError):  # the world's deliberately broken files
            continue
        h, w, _ = im.shape
        shop[p["product_id"]] = _mean_rgb(im[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4])
    ids = list(shop)
    bank = np.stack([shop[i] for i in ids])
    hits1 = hits5 = n = 0
    cache: dict[str, np.ndarray] = {}
    for a in street[:max_queries]:
        if a["product_id"] not in shop:
            continue
        fn = images[a["image_id"]]["file_name"]
        if fn not in cache:
            cache[fn] = np.asarray(Image.open(world / fn).convert("RGB"), dtype=np.float32)
        x, y, bw, bh = (int(v) for v in a["bbox"])
        crop = cache[fn][y : y + bh + 1, x : x + bw + 1]
        order = np.argsort(np.linalg.norm(bank - _mean_rgb(crop), axis=1))
        ranked = [ids[i] for i in order[:5]]
        n += 1
        hits1 += ranked[0] == a["product_id"]
        hits5 += a["product_id"] in ranked
    return {
        "street_garments": float(len(street)),
        "majority_class_accuracy": majority,
        "whole_image_box_hit_rate": whole,
        "mean_colour_recall_at_1": hits1 / max(n, 1),
        "mean_colour_recall_at_5": hits5 / max(n, 1),
        "catalog_products": float(len(ids)),
    }
