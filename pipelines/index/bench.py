"""``tailor bench index``: exact flat vs the tuned IVF-PQ vs an IVF-PQ fast-scan reference vs
IVF-RaBitQ (3 and 2 bits per dimension, the low-memory options) vs HNSW.

For each N: realistic clustered vectors (:mod:`pipelines.index.synthetic`), held-out queries
drawn from the same mixture (a separate tuning set and evaluation set), exact ground truth
computed in batches. Every approximate method is tuned to the same Recall@10 target on the
tuning queries before speeds are compared (a method that cannot reach it is marked), and
every timing, exact search included, is taken warm. Reported per method: Recall@10 against
exact on the evaluation queries, ms/query single-threaded
(one query at a time, ``omp_set_num_threads(1)``) and batched (all threads), bytes per vector
(serialised index / N), build time; for the IVF variants also nprobe/k_factor and the scan
cost in ns per scanned code (IVF scan time minus coarse-quantizer time, divided by the codes
in the probed lists, single-threaded).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from pipelines.index.build import VectorIndex, build_index
from pipelines.index.synthetic import clustered_vectors
from pipelines.index.tune import exact_knn, recall_at_k


def _single_ms(search, q: np.ndarray, n: int) -> float:
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for row in q[:10]:  # warm: first-touch page faults and lazy allocations stay out of the timing
            search(row[None, :])
        t0 = time.perf_counter()
        for row in q[:n]:
            search(row[None, :])
        return (time.perf_counter() - t0) / min(n, len(q)) * 1e3
    finally:
        faiss.omp_set_num_threads(prev)


def _batched_ms(search, q: np.ndarray) -> float:
    search(q[:64])  # warm, as for the single-query timing
    t0 = time.perf_counter()
    search(q)
    return (time.perf_counter() - t0) / len(q) * 1e3


def scan_ns_per_code(index: VectorIndex, q: np.ndarray, k: int = 10) -> float:
    """Single-threaded IVF scan cost per code: (IVF search - coarse quantization) / codes scanned."""
    ivf = index.ivf
    nprobe = index.nprobe
    kk = k * (index.k_factor if index.refine is not None else 1)
    prev = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        qt = q
        if isinstance(index.base, faiss.IndexPreTransform):
            qt = index.base.apply_py(q)
        sizes = index.list_sizes()
        t0 = time.perf_counter()
        _, lists = ivf.quantizer.search(qt, nprobe)
        tq = time.perf_counter() - t0
        codes = int(sizes[lists[lists >= 0]].sum())
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        t0 = time.perf_counter()
        ivf.search(qt, kk, params=params)
        ts = time.perf_counter() - t0
    finally:
        faiss.omp_set_num_threads(prev)
    return max(0.0, ts - tq) / max(1, codes) * 1e9


def _ivf_row(
    name: str,
    xb: np.ndarray,
    tune_q: np.ndarray,
    eval_q: np.ndarray,
    truth: np.ndarray,
    cfg: dict[str, Any],
    target: float,
    factory: str | None,
    single_n: int,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    index, meta = build_index(xb, np.arange(len(xb)), cfg, recall_target=target, factory=factory, queries=tune_q)
    build_s = time.perf_counter() - t0
    _, found = index.search(eval_q, 10)
    row = {
        "method": name,
        "factory": meta["factory"] + (f" +refine {meta['refine']}" if meta["refine"] else ""),
        "recall": recall_at_k(found, truth, 10),
        "ms_single": _single_ms(lambda r: index.search(r, 10), eval_q, single_n),
        "ms_batched": _batched_ms(lambda b: index.search(b, 10), eval_q),
        "bytes_per_vector": index.nbytes() / len(xb),
        "build_s": build_s,
        "nprobe": index.nprobe,
        "k_factor": index.k_factor,
        "tune_recall": meta["recall"],
        "reached": bool(meta["recall"] >= target),
        "ns_per_code": scan_ns_per_code(index, eval_q[:200]),
    }
    index = None  # free before the next variant is built
    gc.collect()
    return row


def _hnsw_row(
    xb: np.ndarray,
    tune_q: np.ndarray,
    eval_q: np.ndarray,
    truth: np.ndarray,
    tune_truth: np.ndarray,
    target: float,
    single_n: int,
    m: int = 16,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(xb.shape[1], m)
    index.hnsw.efConstruction = 40
    index.add(xb)
    build_s = time.perf_counter() - t0
    ef_used, reached = 512, False
    for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        index.hnsw.efSearch = ef
        if recall_at_k(index.search(tune_q, 10)[1], tune_truth, 10) >= target:
            ef_used, reached = ef, True
            break
    index.hnsw.efSearch = ef_used
    row = {
        "method": "hnsw",
        "factory": f"HNSW{m},Flat efSearch={ef_used}",
        "reached": reached,
        "recall": recall_at_k(index.search(eval_q, 10)[1], truth, 10),
        "ms_single": _single_ms(lambda r: index.search(r, 10), eval_q, single_n),
        "ms_batched": _batched_ms(lambda b: index.search(b, 10), eval_q),
        "bytes_per_vector": len(faiss.serialize_index(index)) / len(xb),
        "build_s": build_s,
    }
    index = None  # free before the next variant is built
    gc.collect()
    return row


def run_benchmark(
    sizes: list[int],
    dim: int = 128,
    n_queries: int = 1000,
    target: float = 0.95,
    seed: int = 0,
    cfg: dict[str, Any] | None = None,
    real_vectors: Path | None = None,
    hnsw: bool = True,
    verbose: bool = True,
) -> list[dict]:
    """Benchmark rows (one dict per size x method); see the module docstring for the columns."""
    from pipelines.index.stages import load_config

    cfg = cfg or load_config()
    datasets: list[tuple[str, int, Any]] = [("synthetic", n, None) for n in sizes]
    if real_vectors:
        datasets.append(("catalog", -1, np.load(real_vectors).astype(np.float32)))
    rows: list[dict] = []
    for kind, n, given in datasets:
        t0 = time.perf_counter()
        if given is None:
            x = clustered_vectors(n + 2 * n_queries, dim, seed=seed)
            xb, tune_q, eval_q = x[:n], x[n : n + n_queries], x[n + n_queries :]
        else:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(given))
            nq = min(n_queries, len(given) // 10)
            tune_q, eval_q, xb = given[perm[:nq]], given[perm[nq : 2 * nq]], given[perm[2 * nq :]]
            n = len(xb)
        del_t = time.perf_counter() - t0
        _, tune_truth = exact_knn(xb, tune_q, 10)
        _, truth = exact_knn(xb, eval_q, 10)
        if verbose:
            print(f"[{kind} N={n}] data {del_t:.1f}s, ground truth {time.perf_counter() - t0 - del_t:.1f}s", flush=True)
        t1 = time.perf_counter()
        flat = faiss.IndexFlatL2(xb.shape[1])
        flat.add(xb)
        base = {"dataset": kind, "n": n, "d": xb.shape[1]}
        fr = {
            **base,
            "method": "flat",
            "factory": "Flat",
            "recall": 1.0,
            "ms_single": _single_ms(lambda r, ix=flat: ix.search(r, 10), eval_q, 30 if n > 200_000 else 100),
            "ms_batched": _batched_ms(lambda b, ix=flat: ix.search(b, 10), eval_q),
            "bytes_per_vector": len(faiss.serialize_index(flat)) / n,
            "build_s": time.perf_counter() - t1,
        }
        rows.append(fr)
        flat.reset()  # free the raw vectors' copy before building the next index
        gc.collect()
        d = xb.shape[1]
        from pipelines.index.sizing import plan_index

        nlist = plan_index(n, d, cfg.get("build")).nlist
        # (name, factory, refine): the shipped config; the fast-scan PQ with exact re-ranking
        # as the scan-cost reference; and multi-bit RaBitQ without re-ranking, the memory end
        # of the trade-off: 3 bits per dimension and 2 bits (the most that fits 1/8 of exact
        # at d=128: 52 B codes + 8 B ids). Every row is tuned on the tuning queries to the
        # same Recall@10 target before its speed is compared; one that cannot reach it at
        # any nprobe / efSearch says so (``reached``) and runs at its most accurate setting.
        variants = [
            ("ivfpq-tuned", None, None),
            ("ivfpq-fastscan-ref", f"IVF{nlist},PQ{max(1, d // 4)}x4fs", "Flat"),
            ("ivf-rabitq3", f"IVF{nlist},RaBitQ3", "none"),
            ("ivf-rabitq2", f"IVF{nlist},RaBitQ2", "none"),
        ]
        for name, factory, refine in variants:
            c = cfg if refine is None else {**cfg, "build": {**(cfg.get("build") or {}), "refine": refine}}
            rows.append({**base, **_ivf_row(name, xb, tune_q, eval_q, truth, c, target, factory, 200)})
            if verbose:
                print(f"  {name} done", flush=True)
        if hnsw:
            rows.append({**base, **_hnsw_row(xb, tune_q, eval_q, truth, tune_truth, target, 200)})
        for r in rows:
            if r["n"] == n and r["dataset"] == kind:
                r["speedup_single"] = fr["ms_single"] / r["ms_single"] if r["ms_single"] else float("inf")
                r["memory_ratio"] = r["bytes_per_vector"] / fr["bytes_per_vector"]
        ref = [r.get("ns_per_code") for r in rows if r["n"] == n and r["method"] == "ivfpq-fastscan-ref"]
        for r in rows:
            if r["n"] == n and r.get("ns_per_code") and ref and ref[0]:
                r["scan_vs_fastscan"] = r["ns_per_code"] / ref[0]
        if verbose:
            print_table([r for r in rows if r["n"] == n and r["dataset"] == kind])
        del xb, tune_q, eval_q
        gc.collect()
    return rows


def print_table(rows: list[dict]) -> None:
    """Fixed-width table of benchmark rows."""
    head = (
        f"{'data':9} {'N':>8} {'method':19} {'R@10':>6} {'ms/q 1t':>8} {'ms/q bat':>8} {'x exact':>8} "
        f"{'B/vec':>7} {'mem':>6} {'build s':>8} {'nprobe':>6} {'kf':>3} {'ns/code':>8} {'vs fs':>6}  factory"
    )
    print(head)
    print("-" * len(head))

    def fmt_of(r: dict, key: str, spec: str) -> str:
        v = r.get(key)
        return format(v, spec) if isinstance(v, int | float) else "-"

    for r in rows:

        def f(key: str, spec: str, r: dict = r) -> str:
            return fmt_of(r, key, spec)

        print(
            f"{r['dataset']:9} {r['n']:>8} {r['method']:19} {f('recall', '6.3f')} {f('ms_single', '8.3f')} "
            f"{f('ms_batched', '8.4f')} {f('speedup_single', '8.1f')} {f('bytes_per_vector', '7.1f')} "
            f"{f('memory_ratio', '6.3f')} {f('build_s', '8.1f')} {f('nprobe', '>6')} {f('k_factor', '>3')} "
            f"{f('ns_per_code', '8.2f')} {f('scan_vs_fastscan', '6.2f')}  {r.get('factory', '')}"
            + ("  (target not reached)" if r.get("reached") is False else "")
        )
