"""The catalog as attribute search sees it: product cards with the tags the champion tagger
gave them, their embeddings and the 2-D map, all stored with the index version
(``attributes.parquet``, ``attr_vectors.npy``, ``map.json``; written by
``pipelines.index.attributes``). Serving only reads these files.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.taxonomy import ATTRIBUTES

#: filterable tag heads, in the order the API documents them
TAG_HEADS: tuple[str, ...] = tuple(ATTRIBUTES)
CARD_FIELDS = ("product_id", "title", "mall", "url", "image_url", "price", "currency")


class NoAttributes(RuntimeError):
    """The served index was built before catalog attributes existed: rebuild it."""


def encode_cursor(offset: int, version: str) -> str:
    """An opaque paging cursor: the next row and the index version it belongs to."""
    return base64.urlsafe_b64encode(json.dumps([offset, version]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, version: str) -> int:
    """The offset in ``cursor``; ValueError when it is malformed or from another index version."""
    try:
        offset, ver = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = int(offset)
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError("cursor is not one this service issued") from exc
    if ver != version or offset < 0:
        raise ValueError("cursor belongs to another index version: start again without it")
    return offset


def _value(v: Any) -> Any:
    """A parquet cell as JSON: NaN/NA -> None."""
    import pandas as pd

    return None if v is None or (not isinstance(v, str | bytes | list | dict) and pd.isna(v)) else v


class CatalogView:
    """Products with tags and map coordinates, one index version's worth."""

    def __init__(self, index_dir: Path, version: str) -> None:
        import pandas as pd

        d = Path(index_dir)
        if not (d / "attributes.parquet").exists():
            raise NoAttributes(f"{d} has no attributes.parquet: rebuild the index (rebuild_index DAG)")
        self.version = version
        df = pd.read_parquet(d / "attributes.parquet")
        self.frame = df.sort_values(["category", "product_id"], kind="stable").reset_index(drop=True)
        order = df.reset_index().set_index("product_id").loc[self.frame["product_id"], "index"].to_numpy()
        vec = np.load(d / "attr_vectors.npy").astype(np.float32)
        self.vectors = vec[order] if len(vec) else np.zeros((0, 1), np.float32)
        self.map = json.loads((d / "map.json").read_text())
        self.tagged = bool(self.map.get("tagged"))

    def __len__(self) -> int:
        return len(self.frame)

    def card(self, i: int, **extra: Any) -> dict[str, Any]:
        """Product ``i`` as the API returns it: card fields, ``category``, ``tags``, map point."""
        row = self.frame.iloc[i]
        price = _value(row.get("price"))
        return {
            **{f: _value(row.get(f)) for f in CARD_FIELDS},
            "price": None if price is None else float(price),
            "category": row["category"],
            "tags": {h: row[h] for h in TAG_HEADS if _value(row.get(h)) is not None},
            "x": float(row["x"]),
            "y": float(row["y"]),
            **extra,
        }

    def filter(
        self,
        category: str | None = None,
        tags: dict[str, str | None] | None = None,
        limit: int = 24,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """Products of ``category`` whose tags equal every given value, ``limit`` per page."""
        sel = np.ones(len(self.frame), dtype=bool)
        if category:
            sel &= (self.frame["category"] == category).to_numpy()
        for head, value in (tags or {}).items():
            if value:
                sel &= (self.frame[head] == value).to_numpy()
        rows = np.flatnonzero(sel)
        start = decode_cursor(cursor, self.version) if cursor else 0
        page = rows[start : start + limit]
        nxt = start + limit if start + limit < len(rows) else None
        return {
            "products": [self.card(int(i)) for i in page],
            "total": int(len(rows)),
            "next_cursor": encode_cursor(nxt, self.version) if nxt is not None else None,
        }

    def by_attributes(
        self, category: str, tags: dict[str, str], embedding: np.ndarray | None, k: int
    ) -> list[dict[str, Any]]:
        """Top ``k`` products by how many tags they share with a garment (its category counts
        as one), ties broken by embedding cosine similarity."""
        shared = (self.frame["category"] == category).to_numpy().astype(np.int32)
        for head, value in tags.items():
            if head in self.frame.columns:
                shared += (self.frame[head] == value).to_numpy().astype(np.int32)
        if embedding is not None and len(self.vectors):
            sims = self.vectors @ np.asarray(embedding, np.float32)
        else:
            sims = np.zeros(len(self.frame), np.float32)
        order = np.lexsort((-sims, -shared))[:k]
        out = []
        for i in order:
            row = self.frame.iloc[int(i)]
            same = [h for h, v in tags.items() if h in self.frame.columns and row[h] == v]
            out.append(
                self.card(
                    int(i),
                    shared_tags=int(shared[i]),
                    matching=(["category"] if row["category"] == category else []) + same,
                    score=round(float(sims[i]), 4),
                )
            )
        return out

    def project(self, embedding: np.ndarray) -> list[float]:
        """Where a garment embedding falls on the catalog map."""
        xy = (np.asarray(embedding, np.float64) - np.asarray(self.map["mean"])) @ np.asarray(self.map["components"]).T
        return [round(float(xy[0]), 5), round(float(xy[1]), 5)]

    def map_points(self) -> dict[str, Any]:
        """Every product as a map point (id, x, y, category, title) plus the map's method."""
        f = self.frame
        return {
            "method": self.map.get("method", "pca"),
            "explained_variance": self.map.get("explained_variance"),
            "index_version": self.version,
            "points": [
                {"product_id": p, "x": float(x), "y": float(y), "category": c, "title": t}
                for p, x, y, c, t in zip(
                    f["product_id"],
                    f["x"],
                    f["y"],
                    f["category"],
                    f["title"] if "title" in f else f["product_id"],
                    strict=True,
                )
            ],
        }
