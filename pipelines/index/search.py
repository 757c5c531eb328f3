"""Search: query vectors -> product ids with scores, optionally within categories.

Category filtering uses the id layout (``code << 32 | seq``): one category is one
``IDSelectorRange``, several are an ``IDSelectorOr`` chain of ranges. The selector is applied
inside the IVF scan, so no per-category index is needed and the results are the nearest
products *of that category*. A selective filter leaves fewer candidates per scanned list, so
``nprobe`` is raised by ``1/sqrt(fraction)`` (capped at 8x and at ``nlist``).
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

from pipelines.index.build import category_range


def category_selector(categories: list[str], codes: dict[str, int]) -> tuple[Any | None, list[Any]]:
    """faiss selector for ``categories`` (None when none is known) and the objects to keep alive."""
    keep: list[Any] = []
    sel = None
    for c in categories:
        if c not in codes:
            continue
        lo, hi = category_range(int(codes[c]))
        r = faiss.IDSelectorRange(lo, hi)
        keep.append(r)
        sel = r if sel is None else faiss.IDSelectorOr(sel, r)
        keep.append(sel)
    return sel, keep


def _lookup(loaded: Any) -> dict[int, tuple[str, str, str]]:
    cache = getattr(loaded, "_lookup_cache", None)
    if cache is None or len(cache) != len(loaded.ids):
        t = loaded.ids
        cache = {
            int(v): (p, i, c)
            for v, p, i, c in zip(t["vector_id"], t["product_id"], t["image"], t["category"], strict=True)
        }
        loaded._lookup_cache = cache
    return cache


def _cards(loaded: Any) -> dict[str, dict[str, Any]]:
    cache = getattr(loaded, "_card_cache", None)
    if cache is None:
        p = getattr(loaded, "products", None)
        cache = (
            {}
            if p is None
            else {
                str(r["product_id"]): {k: v for k, v in r.items() if k != "product_id"}
                for r in p.astype(object).where(p.notna(), None).to_dict("records")
            }
        )
        loaded._card_cache = cache
    return cache


def search(loaded: Any, queries: Any, k: int = 10, category: str | list[str] | None = None) -> list[list[dict]]:
    """Top-``k`` products per query: ``[{"product_id", "score", "image", "category", "vector_id"}]``
    plus the product card (``title``, ``mall``, ``url``, ``image_url``, ``price``, ``currency``)
    when the index carries ``products.parquet``.

    ``score`` is the cosine similarity (``1 - d^2/2`` on unit vectors); results are one per
    product (the best of its images). ``category`` restricts results to one or more
    categories; an unknown category gives empty results.
    """
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    index = loaded.index
    sel, nprobe = None, index.nprobe
    if category:
        cats = [category] if isinstance(category, str) else list(category)
        sel, _keep = category_selector(cats, loaded.meta.get("categories", {}))
        if sel is None:
            return [[] for _ in range(len(q))]
        frac = float(loaded.ids["category"].isin(cats).mean()) or 1.0
        nlist = index.ivf.nlist if index.ivf is not None else 1
        nprobe = min(nlist, int(math.ceil(nprobe * min(8.0, 1.0 / math.sqrt(frac)))))
    # Over-fetch so that de-duplicating images of the same product still leaves k products.
    kk = k * 2 if len(loaded.ids) > len(set(loaded.ids["product_id"])) else k
    D, found = index.search(q, kk, nprobe=nprobe, sel=sel)
    if sel is not None and index.ivf is not None:
        # The probed lists may hold too few vectors of the category (a query far from it):
        # widen the probe for those queries until k are found or every list is scanned.
        want = min(kk, int(loaded.ids["category"].isin(cats).sum()))
        wide, nlist = nprobe, index.ivf.nlist
        short = np.flatnonzero((found >= 0).sum(1) < want)
        while len(short) and wide < nlist:
            wide = min(nlist, wide * 4)
            D2, F2 = index.search(q[short], kk, nprobe=wide, sel=sel)
            D[short], found[short] = D2, F2
            short = short[(F2 >= 0).sum(1) < want]
    look = _lookup(loaded)
    cards = _cards(loaded)
    out: list[list[dict]] = []
    for drow, irow in zip(D, found, strict=True):
        hits: list[dict] = []
        seen: set[str] = set()
        for dist, vid in zip(drow, irow, strict=True):
            if vid < 0 or int(vid) not in look:
                continue
            pid, img, cat = look[int(vid)]
            if pid in seen:
                continue
            seen.add(pid)
            hits.append(
                {
                    **cards.get(pid, {}),
                    "product_id": pid,
                    "score": float(1.0 - dist / 2.0),
                    "image": img,
                    "category": cat,
                    "vector_id": int(vid),
                }
            )
            if len(hits) == k:
                break
        out.append(hits)
    return out
