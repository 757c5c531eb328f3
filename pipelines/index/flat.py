"""The search index as serving reads it: one small public API over both index formats.

``load_index(directory)`` returns an object with ``search(vectors (N, D) float32, k,
category=None) -> list[list[dict]]`` (each hit has the :data:`PRODUCT_FIELDS` and ``score``),
``len()`` and a ``version``; it reads a built index version (:mod:`pipelines.index.store`)
or a flat exact index (:class:`FlatIndex`, written by :func:`build_flat_index` for a dev
bundle over a synthetic world). The search service (``bentos``) uses only this module of
the index package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: what a search hit carries about its product (plus ``score``)
PRODUCT_FIELDS = ("product_id", "title", "mall", "url", "image_url", "price", "currency", "category")


class FlatIndex:
    """Exact inner-product index (faiss ``IndexFlatIP``) + product metadata, for small
    catalogs (a dev bundle over a synthetic world, tests). Layout: ``vectors.npy``,
    ``products.jsonl`` (one row per vector, same order), ``index.json`` (version)."""

    def __init__(self, directory: Path) -> None:
        import faiss

        d = Path(directory)
        self.vectors = np.load(d / "vectors.npy").astype(np.float32)
        self.products = [json.loads(line) for line in (d / "products.jsonl").read_text().splitlines() if line.strip()]
        meta = json.loads((d / "index.json").read_text()) if (d / "index.json").exists() else {}
        self.version = str(meta.get("version", d.name))
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)
        self.categories = np.array([p.get("category", "") for p in self.products])

    def __len__(self) -> int:
        return len(self.products)

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[dict[str, Any]]]:
        """Top-``k`` products per query vector, optionally only those of ``category``."""
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if category is None:
            scores, ids = self.index.search(q, min(k, len(self)))
        else:
            # Exact filter: score the category's rows only (the catalog is small enough).
            rows = np.flatnonzero(self.categories == category)
            sims = q @ self.vectors[rows].T
            order = np.argsort(-sims, axis=1)[:, :k]
            ids = rows[order]
            scores = np.take_along_axis(sims, order, axis=1)
        out = []
        for srow, irow in zip(scores, ids, strict=True):
            out.append(
                [
                    {**{f: self.products[i].get(f) for f in PRODUCT_FIELDS}, "score": float(s)}
                    for s, i in zip(srow, irow, strict=True)
                    if i >= 0
                ]
            )
        return out


class _StoredIndex:
    """A built index version (:func:`pipelines.index.store.load_index`) behind the same contract."""

    def __init__(self, inner: Any, directory: Path) -> None:
        self.inner = inner
        meta = getattr(inner, "meta", None) or {}
        self.version = str(meta.get("version") or Path(directory).name)

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[dict[str, Any]]]:
        res = self.inner.search(np.ascontiguousarray(vectors, dtype=np.float32), k, category=category)
        out = []
        for hits in res:
            row = []
            for h in hits:
                h = dict(h) if isinstance(h, dict) else dict(getattr(h, "__dict__", {}))
                row.append({**{f: h.get(f) for f in PRODUCT_FIELDS}, "score": float(h.get("score", 0.0))})
            out.append(row)
        return out


def load_index(directory: Path) -> Any:
    """The index in ``directory``: a :class:`FlatIndex` directory, or a built index version
    (product quantization, :mod:`pipelines.index.store`). Either has ``search(vectors, k,
    category=None)`` and ``version``."""
    d = Path(directory)
    if (d / "vectors.npy").exists() and (d / "products.jsonl").exists():
        return FlatIndex(d)
    from pipelines.index.store import load_index as _load

    return _StoredIndex(_load(d), d)


def build_flat_index(
    embedder: Any,
    products: list[dict[str, Any]],
    image_of: dict[str, Path],
    out: Path,
    version: str,
    batch: int = 32,
    detector: Any | None = None,
    score_min: float | None = None,
) -> Path:
    """Embed each product's shop image and write a :class:`FlatIndex` directory.

    Each image is a product shot embedded whole (``detector=None``, the crop policy of
    :mod:`pipelines.garments`), or cropped to ``detector``'s best box at ``score_min``
    (default ``search.detector_score_min``). Products without a readable image are skipped.
    """
    from PIL import Image

    from pipelines.index.embed import crop_embed_fn

    embed = crop_embed_fn(embedder, detector, score_min)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []
    imgs: list[Any] = []

    def flush() -> None:
        if imgs:
            vecs.append(embed(imgs))
            imgs.clear()

    for p in products:
        path = image_of.get(p["product_id"])
        try:
            with Image.open(path) as im:  # type: ignore[arg-type]
                imgs.append(im.convert("RGB"))
        except (OSError, TypeError):
            continue
        rows.append({f: p.get(f) for f in PRODUCT_FIELDS})
        if len(imgs) >= batch:
            flush()
    flush()
    np.save(out / "vectors.npy", np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32))
    (out / "products.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    (out / "index.json").write_text(json.dumps({"version": version, "kind": "flat-ip", "n": len(rows)}))
    return out


def world_catalog(
    world: Path, mall: str = "demo", base_url: str = "http://127.0.0.1:8001"
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Products of a synthetic world shaped like crawled products (title, mall, url, image_url,
    price, currency, category) and the path of each product's shop image."""
    from pipelines.synth import load_products

    products, images = [], {}
    for p in load_products(Path(world)):
        pid = p["product_id"]
        listed = p.get("listed") or {}
        products.append(
            {
                "product_id": pid,
                "title": p.get("title") or pid,
                "mall": mall,
                "url": f"{base_url}/product/{pid}",
                "image_url": f"{base_url}/images/shop/{pid}.jpg",
                "price": p.get("price"),
                "currency": p.get("currency"),
                "category": listed.get("category") or p.get("category"),
            }
        )
        images[pid] = Path(world) / "images" / "shop" / f"{pid}.jpg"
    return products, images
