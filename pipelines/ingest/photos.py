"""Manifest rows for the real photos (``../shared/datasets/clothing-photos``).

The photos have one garment each and only an image-level label, so a box is derived per
photo by foreground segmentation against the near-uniform background: distance from the
border colour, a threshold, morphology and the largest connected component; where that
fails (no component, or one covering almost the whole frame) a centred box is used and the
row says so (``box_source``). Real labels are mapped onto the product taxonomy
(:func:`models.taxonomy.to_category`: Longsleeve -> ``longsleeve``, Polo -> ``polo`` ...);
the raw label stays in ``label`` for the real-photo category head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from models.taxonomy import (
    ATTRIBUTES,
    IMPLIED,
    MAIN_CATEGORIES,
    NON_GARMENT,
    REAL_TO_CATEGORY,
    to_category,
)

# The real photos' own labels, derived from the product taxonomy (models.taxonomy); kept
# importable for the training tasks that name them (the real-photo head and metrics).
_LABEL_OF = {c: lab for lab, c in REAL_TO_CATEGORY.items()}
#: the 10 main labels (the taxonomy's MAIN_CATEGORIES as real labels, same order)
MAIN_LABELS: tuple[str, ...] = tuple(_LABEL_OF[c] for c in MAIN_CATEGORIES)
#: every garment label of the real photos, in a fixed order (the real-photo head's vocabulary)
REAL_LABELS: tuple[str, ...] = tuple(REAL_TO_CATEGORY)


def derive_box(img, work: int = 128, thresh: float | None = None) -> tuple[list[float], str]:
    """``([x, y, w, h], how)`` of the garment in a single-garment photo (PIL image).

    ``how`` is ``segmented`` or ``centred`` (fallback: the central 80 % of the frame).
    Works on a copy downscaled to ``work`` px (fast), then scales the box back.
    """
    from scipy import ndimage

    w0, h0 = img.size
    s = work / max(w0, h0)
    small = np.asarray(img.convert("RGB").resize((max(1, round(w0 * s)), max(1, round(h0 * s)))), dtype=np.float32)
    h, w, _ = small.shape
    border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    bg = np.median(border, axis=0)
    dist = np.linalg.norm(small - bg, axis=2)
    # the threshold adapts to how noisy the background is (border spread), within bounds
    spread = float(np.percentile(np.linalg.norm(border - bg, axis=1), 90))
    t = thresh if thresh is not None else float(np.clip(2.0 * spread + 12.0, 25.0, 90.0))
    mask = ndimage.binary_opening(dist > t, iterations=1)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    lab, n = ndimage.label(mask)
    fallback = ([0.1 * w0, 0.1 * h0, 0.8 * w0, 0.8 * h0], "centred")
    if n == 0:
        return fallback
    sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
    k = int(np.argmax(sizes)) + 1
    frac = sizes[k - 1] / (h * w)
    if frac < 0.03 or frac > 0.97:
        return fallback
    rows = np.flatnonzero((lab == k).any(1))
    cols = np.flatnonzero((lab == k).any(0))
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    box = [x0 / s, y0 / s, (x1 - x0) / s, (y1 - y0) / s]
    box = [float(max(0.0, min(v, lim))) for v, lim in zip(box, (w0, h0, w0, h0), strict=True)]
    return box, "segmented"


def photo_manifest_rows(
    photos_dir: Path,
    labels_csv: Path | None = None,
    limit: int | None = None,
    skip_non_garment: bool = False,
    absolute: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Rows for the detector, tagger and embedder from the real photos.

    - every row: ``image`` (relative to ``photos_dir``, or absolute if ``absolute``),
      ``source`` = ``photos``, ``label`` (raw), ``group`` (the photo: each is its own item),
      ``sender_id``, ``kids``, ``width``/``height``, ``bbox`` (derived), ``box_source``;
    - tagger: ``category`` (the taxonomy's, None for non-garment labels) and the attribute
      values the category implies (:data:`models.taxonomy.IMPLIED`), the others None;
    - embedder: ``identity`` None (only the category is known), ``category``, ``role`` ``shop``;
    - detector: only photos whose label maps to a category (``boxes`` with one box).

    Unreadable files are skipped; ``Not sure``/``Skip``/``Other`` are kept (the validate
    stage quarantines them) unless ``skip_non_garment``.
    """
    import pandas as pd
    from PIL import Image
    from tqdm import tqdm

    photos_dir = Path(photos_dir)
    labels = pd.read_csv(labels_csv or photos_dir / "labels.csv", dtype={"image": str, "label": str})
    labels = labels[labels["image"] != "image"]  # the CSV repeats its header once
    if skip_non_garment:
        labels = labels[~labels["label"].isin(NON_GARMENT)]
    if limit is not None:
        labels = labels.iloc[:limit]
    det, tag, emb = [], [], []
    for rec in tqdm(labels.itertuples(index=False), total=len(labels), desc="photo boxes", disable=not progress):
        path = photos_dir / "images" / f"{rec.image}.jpg"
        try:
            with Image.open(path) as im:
                width, height = im.size
                im.draft("RGB", (width // 4, height // 4))  # JPEG DCT-domain downscale: ~5x faster
                box, how = derive_box(im)
                sx, sy = width / im.size[0], height / im.size[1]
                box = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
        except (OSError, ValueError):
            continue
        label = str(rec.label)
        cat = to_category(label)
        rel = str(path) if absolute else path.relative_to(photos_dir).as_posix()
        base: dict[str, Any] = {
            "image": rel,
            "source": "photos",
            "label": label,
            "group": f"photo:{rec.image}",
            "sender_id": str(rec.sender_id),
            "kids": str(rec.kids) == "True",
            "width": width,
            "height": height,
        }
        bbox = json.dumps([round(v, 1) for v in box])
        implied = IMPLIED.get(cat, {}) if cat else {}
        tag.append(
            {
                **base,
                "bbox": bbox,
                "box_source": how,
                "category": cat,
                "identity": None,
                **{a: implied.get(a) for a in ATTRIBUTES},
            }
        )
        emb.append({**base, "bbox": bbox, "box_source": how, "category": cat, "identity": None, "role": "shop"})
        if cat is not None:
            det.append(
                {
                    **base,
                    "boxes": json.dumps([{"bbox": [round(v, 1) for v in box], "category": cat}]),
                    "box_source": how,
                }
            )
    return {"detector": pd.DataFrame(det), "tagger": pd.DataFrame(tag), "embedder": pd.DataFrame(emb)}
