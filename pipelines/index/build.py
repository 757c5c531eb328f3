"""The index object: a faiss IVF-PQ base index plus an optional re-ranking store.

faiss' own ``IndexRefine`` supports neither ``remove_ids`` nor search-time ID selectors, and
it needs sequential ids. Re-ranking is therefore done here: the base index (IVF, holding the
external 64-bit ids natively) returns ``k * k_factor`` candidates and the re-ranking store
(an ``IndexIDMap2`` over flat codes: raw floats, SQ or PQ codes) re-scores them. Both halves
support add-with-ids, remove-by-id and category selectors, so incremental updates and
filtered search need no rebuild.

Vector ids are category-contiguous: ``id = category_code << 32 | sequence``, so a category
filter is one ``IDSelectorRange`` whatever the index type.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from pipelines.index.sizing import IndexPlan

CATEGORY_SHIFT = 32


def category_range(code: int) -> tuple[int, int]:
    """``[lo, hi)`` id range of one category code."""
    return code << CATEGORY_SHIFT, (code + 1) << CATEGORY_SHIFT


@dataclass
class VectorIndex:
    """Base ANN index + optional re-ranking store + tuned search parameters."""

    base: Any
    refine: Any | None = None
    nprobe: int = 1
    k_factor: int = 1
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return int(self.base.ntotal)

    @property
    def d(self) -> int:
        """Vector dimension."""
        return int(self.base.d)

    @property
    def ivf(self) -> Any | None:
        """The IVF layer of the base index (None for non-IVF factories)."""
        try:
            return faiss.extract_index_ivf(self.base)
        except RuntimeError:
            return None

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add ``vectors`` under the 64-bit ``ids`` (to the base and the re-ranking store)."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(x):
            self.base.add_with_ids(x, ids)
            if self.refine is not None:
                self.refine.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many vectors the base index dropped."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids):
            return 0
        n = int(self.base.remove_ids(faiss.IDSelectorBatch(ids)))
        if self.refine is not None:
            self.refine.remove_ids(faiss.IDSelectorBatch(ids))
        return n

    def _params(self, nprobe: int, sel: Any | None) -> Any:
        if self.ivf is not None:
            return (
                faiss.SearchParametersIVF(nprobe=int(nprobe), sel=sel)
                if sel is not None
                else faiss.SearchParametersIVF(nprobe=int(nprobe))
            )
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        k_factor: int | None = None,
        sel: Any | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)`` of the ``k`` nearest vectors (squared L2; -1 ids pad).

        ``sel`` is a faiss ``IDSelector`` (category range/batch); it is applied inside the
        IVF scan, so filtered results are the nearest *within* the selection.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.d)
        nprobe = int(nprobe or self.nprobe)
        kf = int(k_factor or self.k_factor) if self.refine is not None else 1
        D, ids = self.base.search(q, k * kf, params=self._params(nprobe, sel))
        if self.refine is None:
            return D[:, :k], ids[:, :k]
        return self._rerank(q, ids, k)

    def _rerank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Re-score the candidates against the re-ranking codes (decoded) and keep the top k.
        nq, kk = cand.shape
        valid = cand >= 0
        flat = cand[valid]
        vec = np.zeros((nq * kk, self.d), dtype=np.float32)
        if len(flat):
            vec[valid.ravel()] = self.refine.reconstruct_batch(flat)
        dist = ((vec.reshape(nq, kk, self.d) - q[:, None, :]) ** 2).sum(-1)
        dist[~valid] = np.inf
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        D = np.take_along_axis(dist, order, 1)
        ids = np.take_along_axis(cand, order, 1)
        ids[~np.isfinite(D)] = -1
        return D.astype(np.float32), ids

    def list_sizes(self) -> np.ndarray:
        """Sizes of the inverted lists (empty array for non-IVF indexes)."""
        ivf = self.ivf
        if ivf is None:
            return np.zeros(0, dtype=np.int64)
        inv = ivf.invlists
        return np.array([inv.list_size(i) for i in range(ivf.nlist)], dtype=np.int64)

    def imbalance(self) -> float:
        """Imbalance factor of the list sizes (1.0 = perfectly even; faiss' definition)."""
        sizes = self.list_sizes().astype(np.float64)
        tot = sizes.sum()
        if tot == 0 or not len(sizes):
            return 1.0
        return float(len(sizes) * (sizes**2).sum() / tot**2)

    def nbytes(self) -> int:
        """Serialised size of base + re-ranking store (what a server holds in RAM)."""
        n = len(faiss.serialize_index(self.base))
        if self.refine is not None:
            n += len(faiss.serialize_index(self.refine))
        return n


def make_index(plan: IndexPlan) -> VectorIndex:
    """Empty, untrained index for ``plan`` (base from the factory string + re-ranking store)."""
    base = faiss.index_factory(plan.d, plan.factory, faiss.METRIC_L2)
    refine = None
    if plan.refine:
        refine = faiss.IndexIDMap2(faiss.index_factory(plan.d, plan.refine, faiss.METRIC_L2))
    return VectorIndex(base=base, refine=refine, nprobe=1, k_factor=plan.k_factor if refine else 1)


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted random row indices for the training sample (sorted for cache-friendly gathers)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def train_and_add(
    plan: IndexPlan, vectors: np.ndarray, ids: np.ndarray, seed: int = 0, add_batch: int = 200_000
) -> tuple[VectorIndex, dict[str, float]]:
    """Train ``plan``'s index on a sample of ``vectors`` and add all of them with ``ids``.

    Returns the index and timings ``{"train_s", "add_s"}``. Adding is batched so the
    temporary residual/code buffers stay small at millions of vectors.
    """
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = make_index(plan)
    t0 = time.perf_counter()
    sample = x[sample_rows(len(x), plan.train_size, seed)]
    ivf = faiss.extract_index_ivf(index.base) if "IVF" in plan.factory else None
    if ivf is not None:
        ivf.cp.seed = seed  # deterministic k-means: same data + seed -> same index
    if isinstance(index.base, faiss.IndexPreTransform):
        for i in range(index.base.chain.size()):
            vt = faiss.downcast_VectorTransform(index.base.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = 10  # faiss' 50 iterations cost minutes at 1M for little gain
    index.base.train(sample)
    if index.refine is not None and not index.refine.is_trained:
        index.refine.train(sample)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for start in range(0, len(x), add_batch):
        index.add(x[start : start + add_batch], ids[start : start + add_batch])
    add_s = time.perf_counter() - t1
    index.info = {"plan": plan.to_dict(), "imbalance_at_build": index.imbalance(), "ntotal_at_build": index.ntotal}
    return index, {"train_s": train_s, "add_s": add_s}


def heldout_queries(vectors: np.ndarray, n_queries: int, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    """Held-out query vectors: catalog vectors perturbed by Gaussian noise, renormalised.

    A shopper's photo of a product is a *different* image of it, so its embedding is near,
    not equal to, the catalog vector; the noise keeps tuning from counting trivial
    self-matches. ``noise`` is the per-vector noise norm relative to the unit vectors.
    """
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)
    q = vectors[rows].astype(np.float32)
    q = q + rng.standard_normal(q.shape).astype(np.float32) * (noise / np.sqrt(q.shape[1]))
    return q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)


def single_query_ms(index: VectorIndex, queries: np.ndarray, k: int = 10, n: int = 200) -> float:
    """Median-free mean latency of one-query-at-a-time search, single-threaded (ms)."""
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        q = queries[:n]
        t0 = time.perf_counter()
        for row in q:
            index.search(row[None, :], k)
        return (time.perf_counter() - t0) / max(1, len(q)) * 1e3
    finally:
        faiss.omp_set_num_threads(prev)


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    cfg: dict[str, Any] | None = None,
    recall_target: float = 0.95,
    factory: str | None = None,
    queries: np.ndarray | None = None,
    k: int = 10,
    seed: int = 0,
) -> tuple[VectorIndex, dict[str, Any]]:
    """Plan, train, add, and tune one index; returns it with its build metadata.

    ``cfg`` is ``config/index.yaml`` (sections ``build``, ``tune``); ``factory`` overrides
    the configured factory string. ``queries`` default to held-out perturbed catalog
    vectors (:func:`heldout_queries`). The metadata holds the plan, the tuned setting and
    its recall, the whole tuning curve, latency and bytes per vector.
    """
    from pipelines.index.sizing import plan_index
    from pipelines.index.tune import exact_knn, tune

    cfg = cfg or {}
    bcfg = dict(cfg.get("build") or {})
    tcfg = dict(cfg.get("tune") or {})
    if factory:
        bcfg["factory"] = factory
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    t0 = time.perf_counter()
    plan = plan_index(len(x), x.shape[1], bcfg)
    index, timings = train_and_add(plan, x, ids, seed=seed)
    build_s = time.perf_counter() - t0
    if queries is None:
        nq = int(tcfg.get("queries", 1000))
        nq = max(min(nq, len(x)), min(len(x), 50))
        queries = heldout_queries(x, nq, float(tcfg.get("query_noise", 0.05)), seed + 1)
    _, truth = exact_knn(x, queries, k, base_ids=ids)
    result = tune(index, queries, truth, target=recall_target, k=k)
    meta = {
        "factory": plan.factory,
        "refine": plan.refine,
        "plan": plan.to_dict(),
        "recall": result["recall"],
        "recall_target": recall_target,
        "recall_reached": result["reached"],
        "k": k,
        "curve": result["curve"],
        "build_s": build_s,
        **timings,
        "ms_per_query": single_query_ms(index, queries, k),
        "ms_per_query_batched": next(
            r["ms_per_query_batched"]
            for r in result["curve"]
            if r["nprobe"] == index.nprobe and r["k_factor"] == index.k_factor
        ),
        "imbalance_at_build": index.imbalance(),
        "imbalance": index.imbalance(),
    }
    index.info["tuned"] = {"nprobe": index.nprobe, "k_factor": index.k_factor}
    return index, meta
