"""Sizing rules: from the number of vectors ``n`` and the dimension ``d`` to an index plan.

The rules hold from a few hundred products to millions:

- ``nlist`` (coarse lists) ~ ``4 * sqrt(n)`` rounded to a power of two (faiss guideline:
  4..16 sqrt(n)), then reduced until the training sample has at least ``39 * nlist``
  points (k-means needs ~39 points per centroid or faiss warns and the lists go ragged)
  and lists hold at least ``min_list_size`` vectors on average;
- PQ sub-vectors ``m``: the largest divisor of ``d`` not above the code-size budget
  (``code_bytes``, default ``d / 8``), so each sub-vector keeps >= 4 dims at d=128 or more;
- PQ bits: 8 where the sample has ``39 * 256`` points, else the most bits the sample can
  train (k-means per sub-quantizer has ``2**nbits`` centroids); fast-scan (4-bit) is used
  where ``fast_scan`` is on and n is large enough for its SIMD blocks to pay;
- training sample: ``train_per_list * nlist`` points, at least what PQ needs, at most ``n``
  and ``max_train``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: k-means in faiss wants >= 39 training points per centroid.
MIN_POINTS_PER_CENTROID = 39


@dataclass
class IndexPlan:
    """Everything needed to build one index: the factory string and its parameters."""

    n: int
    d: int
    nlist: int
    m: int
    nbits: int
    opq: bool
    fast_scan: bool
    train_size: int
    factory: str
    refine: str | None = None
    k_factor: int = 1
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the index metadata)."""
        return asdict(self)


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def choose_nlist(n: int, train_size: int, min_list_size: int = 8) -> int:
    """Coarse list count for ``n`` vectors trained on ``train_size`` points (>= 1)."""
    target = _pow2_floor(4 * math.sqrt(max(1, n)) * 1.41)  # nearest power of two to 4 sqrt(n)
    cap_train = train_size // MIN_POINTS_PER_CENTROID
    cap_lists = n // min_list_size
    return max(1, min(target, _pow2_floor(cap_train) if cap_train else 1, _pow2_floor(cap_lists) if cap_lists else 1))


def choose_m(d: int, code_bytes: int | None = None) -> int:
    """PQ sub-vector count: the largest divisor of ``d`` that is <= the byte budget."""
    budget = max(1, code_bytes or d // 4)
    return max(m for m in range(1, d + 1) if d % m == 0 and m <= budget)


def choose_nbits(train_size: int, fast_scan: bool) -> int:
    """Bits per PQ code: 4 for fast-scan, else 8 when the sample can train 256 centroids."""
    if fast_scan:
        return 4
    bits = int(math.floor(math.log2(max(2, train_size // MIN_POINTS_PER_CENTROID))))
    return max(1, min(8, bits))


def plan_index(n: int, d: int, cfg: dict[str, Any] | None = None) -> IndexPlan:
    """Apply the sizing rules and the config (``config/index.yaml`` ``build`` section).

    ``cfg`` keys (all optional): ``factory`` (a faiss factory string with ``{nlist}``,
    ``{m}``, ``{nbits}`` placeholders, or ``auto``), ``refine`` (``auto`` | ``none`` | a
    faiss factory for the re-ranking codes, e.g. ``Flat``/``SQ8``), ``code_bytes``,
    ``opq`` (bool), ``fast_scan`` (bool), ``fast_scan_min_n``, ``refine_flat_below``,
    ``train_per_list``, ``max_train``, ``min_list_size``.
    """
    cfg = dict(cfg or {})
    if n < 1:
        raise ValueError("cannot plan an index for 0 vectors")
    notes: list[str] = []
    max_train = int(cfg.get("max_train", 262_144))
    train_per_list = int(cfg.get("train_per_list", 64))
    fast_scan = bool(cfg.get("fast_scan", True)) and n >= int(cfg.get("fast_scan_min_n", 1_000))
    # First guess at nlist assumes the full data can be sampled; then fix the sample size.
    nlist = choose_nlist(n, min(n, max_train), int(cfg.get("min_list_size", 8)))
    pq_need = MIN_POINTS_PER_CENTROID * (16 if fast_scan else 256)
    train_size = min(n, max_train, max(train_per_list * nlist, pq_need))
    nlist2 = choose_nlist(n, train_size, int(cfg.get("min_list_size", 8)))
    if nlist2 != nlist:
        notes.append(f"nlist reduced {nlist}->{nlist2} to keep >= {MIN_POINTS_PER_CENTROID} training points per list")
        nlist = nlist2
    m = choose_m(d, cfg.get("code_bytes") and int(cfg["code_bytes"]) * (2 if fast_scan else 1))
    nbits = choose_nbits(train_size, fast_scan)
    if not fast_scan and nbits < 8:
        notes.append(f"PQ uses {nbits} bits: {train_size} training points cannot train 256 centroids")
    # OPQ trains its own 8-bit PQ: it needs 39 * 256 points, and its cost only pays at scale.
    opq = bool(cfg.get("opq", False)) and d % m == 0 and train_size >= MIN_POINTS_PER_CENTROID * 256
    factory = str(cfg.get("factory") or "auto")
    if factory == "auto":
        pre = f"OPQ{m}," if opq else ""
        code = f"PQ{m}x4fs" if fast_scan else f"PQ{m}x{nbits}"
        factory = f"{pre}IVF{nlist},{code}"
    else:
        factory = factory.format(nlist=nlist, m=m, nbits=nbits)
    refine = cfg.get("refine", "auto")
    if refine in (None, "none", ""):
        refine = None
    elif refine == "auto":
        # Below this size exact re-ranking costs nothing worth saving: keep the raw vectors.
        refine = "Flat" if n < int(cfg.get("refine_flat_below", 50_000)) else cfg.get("refine_large", "SQ8")
    k_factor = int(cfg.get("k_factor", 4 if refine else 1))
    return IndexPlan(
        n=n,
        d=d,
        nlist=nlist,
        m=m,
        nbits=nbits,
        opq=opq,
        fast_scan=fast_scan,
        train_size=int(train_size),
        factory=factory,
        refine=refine,
        k_factor=k_factor,
        notes=notes,
    )
