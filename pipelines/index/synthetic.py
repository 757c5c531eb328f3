"""Realistic synthetic embeddings for benchmarks and tests.

Trained image embedders give L2-normalised vectors that cluster by product/category, each
cluster stretched along a few directions (low intrinsic dimension) rather than an isotropic
ball. A Gaussian mixture with anisotropic clusters (random rotation, power-law spectrum),
normalised to the unit sphere, reproduces that structure, so index recall and speed
measured on it transfer better than on uniform random vectors (which no ANN index can
compress, and which no real embedder produces).
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(
    n: int,
    dim: int,
    n_clusters: int | None = None,
    seed: int = 0,
    spread: float = 0.6,
    decay: float = 1.0,
    chunk: int = 65536,
) -> np.ndarray:
    """``n`` unit vectors of ``dim`` floats from an anisotropic Gaussian mixture.

    Cluster sizes are Zipf-like (popular categories are bigger); each cluster has its own
    rotation and a power-law variance spectrum ``i**-decay`` scaled so the mean within-cluster
    distance is ``spread`` times the distance between centres. Generation is chunked so 1M x
    128 needs only the output array (512 MB) plus one chunk.
    """
    rng = np.random.default_rng(seed)
    k = n_clusters or int(max(8, min(4096, round(4 * np.sqrt(n)))))
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    # Power-law spectrum: a few strong directions per cluster, as in trained embeddings.
    spectrum = np.arange(1, dim + 1, dtype=np.float32) ** -decay
    spectrum *= (spread**2 * 2 * dim) / (2 * spectrum.sum())  # E||x - c||^2 = spread^2 * E||c - c'||^2 / 2
    scale = np.sqrt(spectrum).astype(np.float32)
    weights = 1.0 / np.arange(1, k + 1) ** 0.5
    weights /= weights.sum()
    labels = rng.choice(k, size=n, p=weights)
    # One random rotation per cluster would cost k*dim^2 floats; a small bank shared by
    # clusters keeps memory bounded at 1M while still giving each cluster its own orientation.
    bank = [np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32) for _ in range(16)]
    rot_of = rng.integers(0, len(bank), size=k)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        lab = labels[start : start + chunk]
        z = rng.standard_normal((len(lab), dim)).astype(np.float32) * scale
        x = np.empty_like(z)
        for r in np.unique(rot_of[lab]):
            sel = rot_of[lab] == r
            x[sel] = z[sel] @ bank[r]
        x += centres[lab]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + chunk] = x
    return out
