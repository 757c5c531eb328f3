"""Ground truth by exact search, Recall@k, and the nprobe / re-ranking-depth tuner."""

from __future__ import annotations

import time
from typing import Any

import faiss
import numpy as np

from pipelines.index.build import VectorIndex


def exact_knn(
    base: np.ndarray, queries: np.ndarray, k: int, base_ids: np.ndarray | None = None, batch: int = 262_144
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN (squared L2) of ``queries`` in ``base``, batched over the base.

    Batching keeps memory at ``batch * d`` floats plus the running top-k, so ground truth
    for 1M vectors needs no second copy of the base. Returns ``(D, ids)`` where ids are
    ``base_ids`` (row numbers when None).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    nq, d = q.shape
    best_d = np.full((nq, k), np.inf, dtype=np.float32)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    for start in range(0, len(base), batch):
        chunk = np.ascontiguousarray(base[start : start + batch], dtype=np.float32)
        flat = faiss.IndexFlatL2(d)
        flat.add(chunk)
        D, nn = flat.search(q, min(k, len(chunk)))
        nn = np.where(nn >= 0, nn + start, -1)
        all_d = np.concatenate([best_d, D], axis=1)
        all_i = np.concatenate([best_i, nn], axis=1)
        order = np.argsort(all_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(all_d, order, 1)
        best_i = np.take_along_axis(all_i, order, 1)
    if base_ids is not None:
        ids = np.asarray(base_ids, dtype=np.int64)
        best_i = np.where(best_i >= 0, ids[np.clip(best_i, 0, None)], -1)
    return best_d, best_i


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean |found[:k] ∩ truth[:k]| / k over queries (the usual "k-recall@k")."""
    hits = 0
    denom = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t, assume_unique=False))
        denom += len(t)
    return hits / denom if denom else 1.0


def nprobe_grid(nlist: int) -> list[int]:
    """Candidate nprobe values: powers of two (and 1.5x steps) up to ``nlist``."""
    vals = {1}
    p = 1
    while p < nlist:
        vals.update({p, min(nlist, int(p * 1.5))})
        p *= 2
    vals.add(nlist)
    return sorted(v for v in vals if 1 <= v <= nlist)


def _plateaued(curve: list[dict[str, Any]], k_factor: int, steps: int = 3, gain: float = 0.001) -> bool:
    """True when the last ``steps`` nprobe increases at this depth each gained < ``gain`` recall:
    the codes' quantisation error, not the probed lists, bounds recall, so scanning more
    lists only costs time."""
    recalls = [r["recall"] for r in curve if r["k_factor"] == k_factor]
    if len(recalls) <= steps:
        return False
    return all(b - a < gain for a, b in zip(recalls[-steps - 1 : -1], recalls[-steps:], strict=True))


def tune(
    index: VectorIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    target: float = 0.95,
    k: int = 10,
    k_factors: list[int] | None = None,
    timing_queries: int = 200,
) -> dict[str, Any]:
    """Smallest setting that reaches ``target`` Recall@k; sets it on ``index``.

    "Smallest" = fewest scanned lists first, then the shallowest re-ranking depth: for each
    re-ranking depth the nprobe curve is walked upwards until the target holds (or recall
    stops growing: :func:`_plateaued`), then the cheapest (by measured latency) of those
    settings wins. When the target is unreachable the best-recall setting is kept and
    ``reached`` is False. The full curve (recall and single-query latency per setting) is
    returned for logging.
    """
    ivf = index.ivf
    grid = nprobe_grid(ivf.nlist) if ivf is not None else [1]
    kfs = k_factors or ([1, 2, 4, 8, 16] if index.refine is not None else [1])
    curve: list[dict[str, Any]] = []
    candidates: list[dict[str, Any]] = []
    tq = queries[:timing_queries]
    for kf in kfs:
        for nprobe in grid:
            _, ids = index.search(queries, k, nprobe=nprobe, k_factor=kf)
            rec = recall_at_k(ids, truth, k)
            t0 = time.perf_counter()
            index.search(tq, k, nprobe=nprobe, k_factor=kf)
            ms = (time.perf_counter() - t0) / max(1, len(tq)) * 1e3
            row = {"nprobe": nprobe, "k_factor": kf, "recall": rec, "ms_per_query_batched": ms}
            curve.append(row)
            if rec >= target:
                candidates.append(row)
                break  # larger nprobe at this depth only costs more
            if rec >= 0.9999 or _plateaued(curve, kf):
                break
    reached = bool(candidates)
    best = (
        min(candidates, key=lambda r: (r["ms_per_query_batched"], r["nprobe"], r["k_factor"]))
        if reached
        else max(curve, key=lambda r: (r["recall"], -r["ms_per_query_batched"]))
    )
    index.nprobe, index.k_factor = int(best["nprobe"]), int(best["k_factor"])
    return {
        "nprobe": index.nprobe,
        "k_factor": index.k_factor,
        "recall": best["recall"],
        "target": target,
        "reached": reached,
        "k": k,
        "curve": curve,
    }
