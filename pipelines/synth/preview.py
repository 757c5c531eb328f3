"""Contact sheet of a world with its ground truth drawn on, for checking it by eye."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pycocotools import mask as mask_utils

from .taxonomy import TAXONOMY

_CELL_W, _CELL_H, _TEXT_H = 300, 240, 64


def _pick_images(images: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """About half street scenes, a quarter model shots, a quarter shop shots, spread out."""
    by_role: dict[str, list[dict[str, Any]]] = {"street": [], "model": [], "shop": []}
    for im in images:
        by_role.setdefault(im["role"], []).append(im)
    want = {"street": n - 2 * (n // 4), "model": n // 4, "shop": n // 4}
    out: list[dict[str, Any]] = []
    for role in ("street", "model", "shop"):
        lst = by_role[role]
        k = min(want[role], len(lst))
        if k:
            step = len(lst) / k
            out += [lst[int(i * step)] for i in range(k)]
    return out


def _tile(
    world: Path, im: dict[str, Any], anns: list[dict[str, Any]], broken: dict[str, str], font: ImageFont.ImageFont
) -> Image.Image:
    cell = Image.new("RGB", (_CELL_W, _CELL_H + _TEXT_H), (24, 24, 28))
    d = ImageDraw.Draw(cell)
    try:
        img = Image.open(world / im["file_name"])
        img.load()
        img = img.convert("RGB")
    except Exception:  # broken on purpose: show the ground truth on grey instead
        img = Image.new("RGB", (im["width"], im["height"]), (90, 90, 90))
    arr = np.asarray(img, np.float32).copy()
    # product shots keep their true colours (attributes are checked by eye); others get
    # a translucent mask overlay so occlusion handling is visible
    alpha = 0.0 if im["role"] == "shop" else 0.35
    for a in anns if alpha else []:
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        col = np.asarray(TAXONOMY.parsing_palette[a["category_id"] + 2], np.float32)
        arr[m] = arr[m] * (1 - alpha) + col * alpha
    img = Image.fromarray(arr.astype(np.uint8))
    dd = ImageDraw.Draw(img)
    for a in anns:
        x, y, w, h = a["bbox"]
        col = TAXONOMY.parsing_palette[a["category_id"] + 2]
        dd.rectangle([x, y, x + w - 1, y + h - 1], outline=col, width=1)
        name = TAXONOMY.categories[a["category_id"] - 1]
        dd.text(
            (x + 2, y + 1),
            f"{name} {a['visible_fraction']:.2f}",
            fill=(255, 255, 255),
            font=font,
            stroke_width=1,
            stroke_fill=(0, 0, 0),
        )
    s = min(_CELL_W / img.width, _CELL_H / img.height)
    img = img.resize((max(1, int(img.width * s)), max(1, int(img.height * s))), Image.BILINEAR)
    cell.paste(img, ((_CELL_W - img.width) // 2, (_CELL_H - img.height) // 2))
    lines = [
        f"{im['role']}  {Path(im['file_name']).name}"
        + (f"  BROKEN:{broken[im['file_name']]}" if im["file_name"] in broken else "")
    ]
    if im["role"] == "shop" and anns:
        a = anns[0]
        lines.append(f"{a['product_id']} {TAXONOMY.categories[a['category_id'] - 1]}")
        lines.append(", ".join(f"{k}={v}" for k, v in sorted(a["attributes"].items())))
    else:
        lines.append(
            f"{len(anns)} garments: " + ", ".join(sorted({TAXONOMY.categories[a["category_id"] - 1] for a in anns}))
        )
    for i, t in enumerate(lines):
        d.text((4, _CELL_H + 3 + 14 * i), t[:60], fill=(230, 230, 230), font=font)
    return cell


def preview(world: Path, out_png: Path, n: int = 16) -> Path:
    """Write a contact sheet of ``n`` images of ``world`` with boxes, labels and masks drawn."""
    world, out_png = Path(world), Path(out_png)
    coco = json.loads((world / "annotations" / "coco.json").read_text())
    broken_path = world / "broken.json"
    broken = {b["file"]: b["kind"] for b in json.loads(broken_path.read_text())} if broken_path.exists() else {}
    by_img: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    chosen = _pick_images(coco["images"], n)
    font = ImageFont.load_default(size=11)
    cols = max(1, math.ceil(math.sqrt(len(chosen))))
    rows = max(1, math.ceil(len(chosen) / cols))
    sheet = Image.new("RGB", (cols * _CELL_W, rows * (_CELL_H + _TEXT_H)), (0, 0, 0))
    for i, im in enumerate(chosen):
        tile = _tile(world, im, by_img.get(im["id"], []), broken, font)
        sheet.paste(tile, ((i % cols) * _CELL_W, (i // cols) * (_CELL_H + _TEXT_H)))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, format="PNG")
    return out_png
