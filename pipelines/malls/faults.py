"""Fault injection for the demo malls.

A :class:`FaultConfig` says *how much* of each fault a mall has; a :class:`FaultPlan` says
*which* product pages and images are faulty. Selection is deterministic (a hash of seed,
mall name, fault kind and id) so a crawler test can assert exactly which URLs misbehave.
Stateful faults ("the first k requests fail") count requests in a :class:`FaultState`
that belongs to one running server, so two servers over the same mall never share
counters.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

#: Fault kinds that apply to product pages (keyed by product id), in selection order.
PRODUCT_FAULTS = ("not_found", "error_burst", "rate_limit", "slow", "redirect")
#: Fault kinds that apply to image URLs (keyed by image name), in selection order.
IMAGE_FAULTS = ("wrong_content_type", "truncated_image")


def stable_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from ``parts`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FaultConfig(BaseModel):
    """How much of each fault a mall injects; every rate is a share of candidates (0 = off).

    A rate above zero always selects at least one candidate, so a small mall still shows
    every switched-on fault.
    """

    not_found_rate: float = Field(0.0, ge=0, le=1, description="listed product pages that answer 404")
    error_burst_rate: float = Field(0.0, ge=0, le=1, description="product pages answering 500/503 first")
    burst_len: int = Field(2, ge=1, description="failing requests before a burst path succeeds")
    rate_limit_rate: float = Field(0.0, ge=0, le=1, description="product pages answering 429 first")
    retry_after_s: int = Field(1, ge=0, description="Retry-After seconds sent with 429")
    slow_rate: float = Field(0.0, ge=0, le=1, description="product pages that sleep before answering")
    slow_s: float = Field(0.5, ge=0, description="sleep for slow pages")
    redirect_rate: float = Field(0.0, ge=0, le=1, description="product links via a redirect chain")
    redirect_hops: int = Field(2, ge=1, description="hops of an ordinary redirect chain")
    long_redirect_hops: int = Field(7, ge=6, description="hops of the one over-long chain (> 5)")
    wrong_content_type_rate: float = Field(0.0, ge=0, le=1, description="images with a wrong type")
    truncated_image_rate: float = Field(0.0, ge=0, le=1, description="images cut short")
    truncate_fraction: float = Field(0.5, gt=0, lt=1, description="share of bytes kept when cut")

    @classmethod
    def all_on(cls, **overrides: Any) -> FaultConfig:
        """Every fault kind on at moderate rates (``overrides`` replace single fields)."""
        values: dict[str, Any] = dict(
            not_found_rate=0.03,
            error_burst_rate=0.04,
            burst_len=2,
            rate_limit_rate=0.03,
            retry_after_s=1,
            slow_rate=0.02,
            slow_s=0.3,
            redirect_rate=0.05,
            redirect_hops=2,
            wrong_content_type_rate=0.03,
            truncated_image_rate=0.03,
        )
        values.update(overrides)
        return cls(**values)

    def rate(self, kind: str) -> float:
        """The rate of fault ``kind`` (one of :data:`PRODUCT_FAULTS` / :data:`IMAGE_FAULTS`)."""
        name = {
            "error_burst": "error_burst_rate",
            "wrong_content_type": "wrong_content_type_rate",
            "truncated_image": "truncated_image_rate",
        }.get(kind, f"{kind}_rate")
        return float(getattr(self, name))

    @property
    def enabled(self) -> bool:
        """True when at least one fault kind is switched on."""
        return any(self.rate(k) > 0 for k in PRODUCT_FAULTS + IMAGE_FAULTS)


def _select(ids: list[str], kinds: tuple[str, ...], config: FaultConfig, seed: int, mall: str) -> dict[str, set[str]]:
    """Pick disjoint id sets per kind: rank by hash, take ``max(1, round(rate*n))``.

    Disjoint sets keep each faulty URL showing exactly one fault, which keeps crawler
    tests readable (a 404 page is never also slow).
    """
    taken: set[str] = set()
    chosen: dict[str, set[str]] = {}
    n = len(ids)
    for kind in kinds:
        rate = config.rate(kind)
        if rate <= 0 or n == 0:
            chosen[kind] = set()
            continue
        want = max(2 if kind == "redirect" else 1, round(rate * n))
        ranked = sorted((i for i in ids if i not in taken), key=lambda i, k=kind: stable_hash(seed, mall, k, i))
        chosen[kind] = set(ranked[:want])
        taken |= chosen[kind]
    return chosen


@dataclass
class FaultPlan:
    """Which ids of one mall carry which fault; pure data, no request state."""

    config: FaultConfig
    products: dict[str, set[str]] = field(default_factory=dict)  # kind -> product ids
    images: dict[str, set[str]] = field(default_factory=dict)  # kind -> image names
    redirect_hops: dict[str, int] = field(default_factory=dict)  # product id -> hops
    burst_status: dict[str, int] = field(default_factory=dict)  # product id -> 500 | 503
    wrong_type_variant: dict[str, str] = field(default_factory=dict)  # image -> variant

    @classmethod
    def build(
        cls, config: FaultConfig, product_ids: list[str], image_names: list[str], seed: int, mall: str
    ) -> FaultPlan:
        """Select faulty products and images deterministically from ``seed`` and ``mall``."""
        plan = cls(config=config)
        plan.products = _select(sorted(product_ids), PRODUCT_FAULTS, config, seed, mall)
        plan.images = _select(sorted(image_names), IMAGE_FAULTS, config, seed, mall)
        redirects = sorted(plan.products["redirect"], key=lambda p: stable_hash(seed, mall, "hops", p))
        for i, pid in enumerate(redirects):
            # Exactly one chain is longer than 5 hops, so a max-redirects limit is exercised.
            plan.redirect_hops[pid] = config.long_redirect_hops if i == 0 else config.redirect_hops
        for pid in plan.products["error_burst"]:
            plan.burst_status[pid] = 500 if stable_hash(seed, mall, "status", pid) < 0.5 else 503
        for name in plan.images["wrong_content_type"]:
            # "header": real JPEG bytes labelled text/html; "body": an HTML page labelled image/jpeg.
            plan.wrong_type_variant[name] = "header" if stable_hash(seed, mall, "variant", name) < 0.5 else "body"
        return plan

    def product_fault(self, pid: str) -> str | None:
        """The fault kind of product page ``pid`` (None if clean)."""
        for kind, ids in self.products.items():
            if pid in ids:
                return kind
        return None

    def image_fault(self, name: str) -> str | None:
        """The fault kind of image ``name`` (None if clean)."""
        for kind, ids in self.images.items():
            if name in ids:
                return kind
        return None

    def describe(self) -> dict[str, Any]:
        """Faulty ids per kind plus the parameters a test needs to check them."""
        return {
            "config": self.config.model_dump(),
            "products": {k: sorted(v) for k, v in self.products.items()},
            "images": {k: sorted(v) for k, v in self.images.items()},
            "redirect_hops": dict(sorted(self.redirect_hops.items())),
            "burst_status": dict(sorted(self.burst_status.items())),
            "wrong_content_type_variant": dict(sorted(self.wrong_type_variant.items())),
        }


class FaultState:
    """Per-server request counters for the "first k requests fail" faults (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def hit(self, key: str) -> int:
        """Count one request for ``key``; returns how many came before it."""
        with self._lock:
            before = self._seen[key]
            self._seen[key] += 1
            return before

    def reset(self) -> None:
        """Forget every count (faults fire again from the start)."""
        with self._lock:
            self._seen.clear()
