"""Train/val/test splits by product *and* near-duplicate group.

Products and near-duplicate groups are nodes of a union-find: every image joins its
product with its near-duplicate group, so a product, all its images, and every image
near-identical to one of them (possibly of another product) form one component. Whole
components are assigned to splits, stratified by the component's label, in an order fixed
by a seeded hash — so the same product or a near-identical image never lands in two
splits, and a component keeps its split as long as its members do.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable

import pandas as pd

from pipelines._unionfind import UnionFind


def product_groups(images: pd.DataFrame, product_ids: Iterable[str]) -> dict[str, str]:
    """product_id -> component id, joining products through shared images/near-dup groups."""
    uf = UnionFind()
    for pid in product_ids:
        uf.find(f"p:{pid}")
    for pid, sha, grp in zip(
        images["product_id"], images["sha256"], images.get("near_dup_group", images["sha256"]), strict=True
    ):
        uf.union(f"p:{pid}", f"g:{grp}")
        uf.union(f"p:{pid}", f"s:{sha}")  # exact same bytes as another product's image
    return {pid: uf.find(f"p:{pid}") for pid in product_ids}


def _order(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(
    groups: dict[str, str], labels: dict[str, str], fractions: dict[str, float], seed: int = 0
) -> dict[str, str]:
    """product_id -> split; whole groups go to one split, stratified by the group's label.

    In each label stratum, groups are ordered by a seeded hash and cut at the cumulative
    fractions; a stratum with at least three groups gets at least one val and one test group
    so small classes can be evaluated.
    """
    members: dict[str, list[str]] = {}
    for pid, g in groups.items():
        members.setdefault(g, []).append(pid)
    strata: dict[str, list[str]] = {}
    for g, pids in members.items():
        label = Counter(str(labels.get(p)) for p in pids).most_common(1)[0][0]
        strata.setdefault(label, []).append(g)
    f_val, f_test = fractions.get("val", 0.1), fractions.get("test", 0.1)
    split_of_group: dict[str, str] = {}
    for _label, gs in sorted(strata.items()):
        gs = sorted(gs, key=lambda g: _order(g, seed))
        n = len(gs)
        n_test, n_val = round(n * f_test), round(n * f_val)
        if n >= 3:
            n_test, n_val = max(1, n_test), max(1, n_val)
        for i, g in enumerate(gs):
            split_of_group[g] = "test" if i < n_test else ("val" if i < n_test + n_val else "train")
    return {pid: split_of_group[g] for pid, g in groups.items()}
