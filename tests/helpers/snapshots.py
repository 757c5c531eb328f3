"""Fabricate small crawl snapshots (same files and columns as ``pipelines.crawl.snapshot``).

For fast unit tests of validation without a crawl: ``fabricate_snapshot(dir, n=40)``
writes real JPEG blobs, near-duplicate pairs across products, and lets a ``mutate``
callback break the product/image frames before they are written.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipelines.crawl.snapshot import IMAGE_COLUMNS, PRODUCT_COLUMNS, tree_hash

Mutator = Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


def _jpeg(rng: random.Random, size: tuple[int, int]) -> bytes:
    from PIL import Image

    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x, y = rng.randrange(size[0] - 16), rng.randrange(size[1] - 16)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 16, y + 16))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def fabricate_snapshot(
    out: Path,
    n: int = 40,
    seed: int = 0,
    mall: str = "demo-jsonld",
    categories: tuple[str, ...] | None = None,
    images_per_product: int = 2,
    near_dup_every: int = 7,
    mutate: Mutator | None = None,
    fetched_at: pd.Timestamp | None = None,
) -> Path:
    """Write a snapshot directory with ``n`` products; return it.

    Every ``near_dup_every``-th product shares a near-duplicate group with the previous one
    (as the crawler marks re-listed, slightly edited photos). Categories cycle through
    ``categories`` (default: the taxonomy categories the synthetic world draws, in its
    order) with a long tail.
    """
    from models.taxonomy import SYNTHETIC_TO_CATEGORY

    out = Path(out)
    rng = random.Random(seed)
    cats = categories or tuple(SYNTHETIC_TO_CATEGORY.values())
    fetched = fetched_at or pd.Timestamp.now(tz="UTC")
    products, images = [], []
    for k in range(n):
        pid = f"{mall}:p{k:05d}"
        # Long tail: low indices more frequent.
        cat = cats[min(int(rng.expovariate(0.5)), len(cats) - 1)]
        shas = []
        for j in range(images_per_product):
            data = _jpeg(rng, (192, 256))
            sha = hashlib.sha256(data).hexdigest()
            blob = out / "images" / sha[:2] / f"{sha}.jpg"
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            shas.append(sha)
            images.append(
                {
                    "sha256": sha,
                    "width": 192,
                    "height": 256,
                    "format": "JPEG",
                    "phash": f"{rng.getrandbits(64):016x}",
                    "bytes": len(data),
                    "ext": "jpg",
                    "source_url": f"http://127.0.0.1:8001/img/{k}_{j}.jpg",
                    "product_id": pid,
                    "mall": mall,
                    "role": "shop" if j == 0 else "model",
                    "position": j,
                    "near_dup_group": sha,
                }
            )
        products.append(
            {
                "product_id": pid,
                "mall": mall,
                "url": f"http://127.0.0.1:8001/p/p{k:05d}",
                "sku": f"p{k:05d}",
                "title": f"Item {k}",
                "brand": "Acme",
                "price": round(rng.uniform(5, 200), 2),
                "currency": "EUR",
                "category": cat,
                "description": f"A {cat}.",
                "attributes": json.dumps({"color": rng.choice(["red", "navy", "black"])}),
                "image_urls": [r["source_url"] for r in images[-images_per_product:]],
                "image_sha256": shas,
                "fetched_at": fetched,
                "status": "fetched",
                "removed": False,
                "also_in": [],
                "listings": json.dumps([{"product_id": pid, "mall": mall}]),
                "n_listings": 1,
            }
        )
        if near_dup_every and k % near_dup_every == near_dup_every - 1 and k > 0:
            # This product's shop shot is a near-duplicate of the previous product's.
            prev = images[-2 * images_per_product]["near_dup_group"]
            images[-images_per_product]["near_dup_group"] = min(prev, images[-images_per_product]["sha256"])
            images[-2 * images_per_product]["near_dup_group"] = min(prev, images[-images_per_product]["sha256"])
    pdf = pd.DataFrame(products, columns=PRODUCT_COLUMNS)
    idf = pd.DataFrame(images, columns=IMAGE_COLUMNS)
    if mutate is not None:
        pdf, idf = mutate(pdf, idf)
    pdf.to_parquet(out / "products.parquet", index=False)
    idf.to_parquet(out / "images.parquet", index=False)
    pd.DataFrame({"url": [], "mall": [], "kind": [], "reason": []}).to_parquet(out / "failures.parquet")
    (out / "stats.json").write_text(json.dumps({"products": len(pdf), "images": len(idf)}))
    meta = {
        "name": out.name,
        "created_at": fetched.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "malls": [mall],
        "content_sha256": tree_hash(out),
        "counts": {"products": len(pdf), "images": len(idf)},
    }
    (out / "snapshot.json").write_text(json.dumps(meta, indent=1))
    return out
