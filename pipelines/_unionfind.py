"""Disjoint sets, shared by dedup (near-duplicate groups, merged products) and splitting."""

from __future__ import annotations


class UnionFind:
    """Disjoint sets over string keys with path halving; a set's id is its smallest key,
    so groups get the same canonical id whatever order they were joined in."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        """The canonical member of ``x``'s set (the smallest key)."""
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        """Merge the sets of ``a`` and ``b``."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
