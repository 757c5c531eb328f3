"""Incremental updates: add new products, remove removed ones, decide when to rebuild.

A full rebuild is needed when (a) the embedder changed (vectors from two embedders are not
comparable), or (b) the coarse quantizer no longer fits the data: its list sizes have
drifted so that the imbalance factor grew by more than ``max_imbalance_ratio`` over the
value at build time (uneven lists make scans slower and recall at the tuned nprobe lower),
or (c) the index grew or shrank by more than ``max_growth`` (the sizing rules would pick
another nlist).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def diff_catalog(ids_table: Any, catalog_rows: Any) -> tuple[Any, np.ndarray]:
    """``(new_rows, removed_vector_ids)`` between the indexed id table and the catalog images.

    A product whose image changed counts as removed (old vector) and new (new vector).
    """
    key_old = ids_table["product_id"].astype(str) + "\x00" + ids_table["image"].astype(str)
    key_new = catalog_rows["product_id"].astype(str) + "\x00" + catalog_rows["image"].astype(str)
    removed = ids_table.loc[~key_old.isin(set(key_new)), "vector_id"].to_numpy(dtype=np.int64)
    new_rows = catalog_rows[~key_new.isin(set(key_old))].reset_index(drop=True)
    return new_rows, removed


def rebuild_reasons(
    meta: dict[str, Any], embedder_version: str, imbalance: float, ntotal: int, cfg: dict[str, Any] | None = None
) -> list[str]:
    """Why the index must be rebuilt rather than updated (empty list: update is fine)."""
    cfg = cfg or {}
    reasons = []
    if str(meta.get("embedder_version")) != str(embedder_version):
        reasons.append(f"embedder changed: {meta.get('embedder_version')} -> {embedder_version}")
    base_imb = float(meta.get("imbalance_at_build") or 1.0)
    bound = float(cfg.get("max_imbalance_ratio", 1.5))
    if imbalance > base_imb * bound:
        reasons.append(f"coarse quantizer drift: imbalance {imbalance:.3f} > {bound} x {base_imb:.3f} at build")
    n0 = int(meta.get("ntotal_at_build") or meta.get("ntotal") or 0)
    growth = float(cfg.get("max_growth", 2.0))
    if n0 and (ntotal > n0 * growth or ntotal < n0 / growth):
        reasons.append(f"size changed {n0} -> {ntotal} (more than {growth}x): nlist no longer fits")
    return reasons


def update_index(
    index_dir: Path,
    catalog: Path,
    images_root: Path | None,
    embed_fn: Any,
    cfg: dict[str, Any] | None = None,
    out: Path | None = None,
    snapshot_id: str | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Apply the catalog's additions and removals to the index in ``index_dir``.

    Writes a *new* version directory (the old one is never modified, serving may hold it)
    and returns ``{"path", "added", "removed", "imbalance", "rebuild": [reasons]}``. When
    a rebuild is needed nothing is written and ``path`` is None: the caller runs a full
    build instead.
    """
    from pipelines.index.embed import (
        assign_ids,
        catalog_images,
        embed_images,
        embedder_version,
        product_cards,
    )
    from pipelines.index.store import load_index, save_index

    cfg = cfg or {}
    loaded = load_index(index_dir)
    meta = dict(loaded.meta)
    version = embedder_version(embed_fn)
    reasons = rebuild_reasons(meta, version, loaded.index.imbalance(), loaded.index.ntotal, cfg.get("update"))
    if reasons:
        return {"path": None, "added": 0, "removed": 0, "rebuild": reasons}
    rows = catalog_images(Path(catalog), images_root)
    new_rows, removed = diff_catalog(loaded.ids, rows)
    index = loaded.index
    n_removed = index.remove(removed)
    ids_table = loaded.ids[~loaded.ids["vector_id"].isin(set(removed.tolist()))]
    if len(new_rows):
        vectors = embed_images(new_rows["image"].tolist(), embed_fn, batch_size, progress, "embed new")
        vids, codes, seq = assign_ids(new_rows["category"].tolist(), meta.get("categories"), meta.get("next_seq"))
        index.add(vectors, vids)
        new_rows = new_rows.assign(vector_id=vids)[ids_table.columns]
        import pandas as pd

        ids_table = pd.concat([ids_table, new_rows], ignore_index=True)
        meta["categories"], meta["next_seq"] = codes, seq
    imb = index.imbalance()
    reasons = rebuild_reasons(meta, version, imb, index.ntotal, cfg.get("update"))
    if reasons:
        return {"path": None, "added": int(len(new_rows)), "removed": n_removed, "rebuild": reasons}
    meta.update(
        {
            "kind": "update",
            "parent": meta.get("version"),
            "imbalance": imb,
            "snapshot_id": snapshot_id or meta.get("snapshot_id"),
            "ntotal_at_build": meta.get("ntotal_at_build") or meta.get("ntotal"),
            "added": int(len(new_rows)),
            "removed": int(n_removed),
        }
    )
    for k in ("version", "created", "bytes", "bytes_per_vector"):
        meta.pop(k, None)
    path = save_index(index, ids_table.reset_index(drop=True), meta, out=out, products=product_cards(Path(catalog)))
    return {"path": str(path), "added": int(len(new_rows)), "removed": int(n_removed), "imbalance": imb, "rebuild": []}
