"""Index test helpers: small catalogs of coloured JPEGs (a colour family per category)."""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = ["dress", "shirt", "skirt", "coat", "shoe", "bag"]


def make_catalog(root, n: int = 240, seed: int = 0, start: int = 0):
    """Catalog parquet + JPEGs: each category has its own colour family, each product a pattern."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(start, start + n):
        cat = CATEGORIES[i % len(CATEGORIES)]
        base = np.array([(37 * (CATEGORIES.index(cat) + 1)) % 256, (91 * CATEGORIES.index(cat)) % 256, 128])
        im = Image.new("RGB", (48, 48), tuple(int(v) for v in base))
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x, y = rng.integers(0, 40, 2)
            d.rectangle([int(x), int(y), int(x) + 8, int(y) + 8], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        rel = f"img/p{i}.jpg"
        im.save(root / rel, quality=90)
        rows.append(
            {
                "product_id": f"p{i}",
                "category": cat,
                "image": rel,
                "title": f"product {i}",
                "price": 10.0 + i,
                "image_urls": [f"http://mall/img/p{i}.jpg", f"http://mall/img/p{i}-2.jpg"],
            }
        )
    pd.DataFrame(rows).to_parquet(root / "catalog.parquet", index=False)
    return root / "catalog.parquet"
