"""``tailor bench photos``: the deployed endpoint on real garment photos it has never seen.

The demo's photo mall leaves a seeded 5 % of ``../shared/datasets/clothing-photos`` out of
its shop (:func:`pipelines.malls.photos.held_out_photos`): those photos are in no catalog,
index or training split. Each one of the 10 main labels is sent to the public ``/search``;
the garment with the highest score is the answer. Reported next to their trivial
baselines on the same photos:

- category accuracy (baseline: always the most frequent of their categories);
- same-category precision@5 of the returned products (baseline: a random pick from the
  index, i.e. the share of the index in the photo's category);

and a grid of the first queries with the category answered and the top-5 products
(frame green = same category) is drawn to a PNG.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def check_photos(
    url: str,
    photos: list[tuple[Path, str]],
    index_categories: list[str],
    k: int = 5,
    grid_png: Path | None = None,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Send each ``(file, label)`` of the 10 main labels to ``url``/search; return the figures."""
    from models.taxonomy import MAIN_CATEGORIES, to_category

    queries = [(f, to_category(lab)) for f, lab in photos if to_category(lab) in MAIN_CATEGORIES]
    if not queries:
        raise RuntimeError("no held-out photo of the 10 main labels")
    share = Counter(index_categories)
    n_index = max(len(index_categories), 1)
    hits, p5, base_p5, rows = [], [], [], []
    with httpx.Client(timeout=120) as client:
        for i, (f, cat) in enumerate(queries):
            r = client.post(
                f"{url}/search", files={"image": (f.name, f.read_bytes(), "image/jpeg")}, data={"k": str(k)}
            )
            r.raise_for_status()
            garments = r.json()["garments"]
            top = max(garments, key=lambda g: g["score"]) if garments else None
            pred = top["category"] if top else None
            cats = [m.get("category") for m in (top["matches"] if top else [])][:k]
            hits.append(pred == cat)
            p5.append(sum(c == cat for c in cats) / k)
            base_p5.append(share[cat] / n_index)
            if len(rows) < 12:
                rows.append((f, cat, pred, top["matches"][:k] if top else []))
            if (i + 1) % 50 == 0:
                echo(f"  {i + 1}/{len(queries)}: accuracy {np.mean(hits):.3f}, P@{k} {np.mean(p5):.3f}")
    truth = Counter(c for _, c in queries)
    report = {
        "url": url,
        "n": len(queries),
        "category_accuracy": round(float(np.mean(hits)), 4),
        "baseline_category_accuracy": round(truth.most_common(1)[0][1] / len(queries), 4),
        f"precision_at_{k}": round(float(np.mean(p5)), 4),
        f"baseline_precision_at_{k}": round(float(np.mean(base_p5)), 4),
        "per_category_accuracy": {
            c: round(float(np.mean([h for h, (_, q) in zip(hits, queries, strict=True) if q == c])), 3)
            for c in sorted(truth)
        },
    }
    if grid_png is not None:
        report["grid"] = str(_grid(rows, grid_png))
    return report


def _grid(rows: list[tuple[Path, str, str | None, list[dict]]], path: Path, size: int = 128) -> Path:
    """Query | top-5 product images (green frame: same category), captions = categories."""
    from PIL import Image, ImageDraw, ImageOps

    def tile(img: Image.Image, caption: str, colour: tuple[int, int, int]) -> Image.Image:
        t = ImageOps.pad(img.convert("RGB"), (size - 6, size - 6), color=(255, 255, 255))
        t = ImageOps.expand(t, 3, fill=colour)
        ImageDraw.Draw(t).text(
            (4, size - 16), caption[:20], fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0)
        )
        return t

    canvas = Image.new("RGB", (size * 6, size * len(rows)), (255, 255, 255))
    with httpx.Client(timeout=30) as client:
        for y, (f, cat, pred, matches) in enumerate(rows):
            with Image.open(f) as im:
                canvas.paste(tile(im, f"{cat} -> {pred}", (0, 160, 0) if pred == cat else (200, 0, 0)), (0, y * size))
            for x, m in enumerate(matches, start=1):
                try:
                    img = Image.open(io.BytesIO(client.get(m["image_url"]).content)) if m.get("image_url") else None
                except (httpx.HTTPError, OSError):
                    img = None
                img = img or Image.new("RGB", (size, size), (220, 220, 220))
                canvas.paste(
                    tile(img, str(m.get("category")), (0, 160, 0) if m.get("category") == cat else (200, 0, 0)),
                    (x * size, y * size),
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def bench_photos(out_png: Path | None = None, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """:func:`check_photos` on the held-out photos against the deployed endpoint."""
    from pipelines.malls.photos import held_out_photos
    from pipelines.settings import get_settings

    from .release import read_state, release_info
    from .smoke import index_products

    s = get_settings()
    if not s.demo_photos_dir:
        raise RuntimeError("no real photos: ../shared/datasets/clothing-photos is absent")
    cur = read_state(s).get("current")
    if not cur:
        raise RuntimeError("nothing is deployed: run `tailor deploy run` (or `make demo`) first")
    cats = [str(p.get("category")) for p in index_products(Path(release_info(cur, s)["bundle"]))]
    photos = held_out_photos(Path(s.demo_photos_dir), seed=s.seed)
    echo(f"{len(photos)} held-out photos (in no catalog, index or training split) -> {s.url(s.bento_port)}/search")
    rep = check_photos(s.url(s.bento_port), photos, cats, grid_png=out_png or s.bench_dir / "photos.png", echo=echo)
    echo(
        f"category accuracy {rep['category_accuracy']} (majority baseline {rep['baseline_category_accuracy']}), "
        f"same-category P@5 {rep['precision_at_5']} (random baseline {rep['baseline_precision_at_5']}), "
        f"n={rep['n']}; grid: {rep.get('grid')}"
    )
    return rep
