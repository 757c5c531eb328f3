"""Class balancing of the train split: random oversampling (``repeat``), weights, or none.

Only ``split == "train"`` rows change; val/test keep ``repeat = 1`` and ``weight = 1`` so
evaluation measures the real distribution. Oversampling sets how many times a row is drawn
per epoch (training augments the repeats); which rows of a class get the extra draw is
chosen by a seeded RNG, so the same seed gives the same manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

STRATEGIES = ("oversample", "weights", "none")


def balance(df: pd.DataFrame, label: str, spec: dict[str, Any], seed: int = 0) -> pd.DataFrame:
    """Return a copy of ``df`` with ``repeat`` and ``weight`` set per ``spec``.

    ``spec``: ``{"strategy": "oversample", "target_ratio": 0.5, "max_repeat": 20}`` brings
    every train class to at least ``target_ratio`` x the largest train class (in draws);
    ``{"strategy": "weights"}`` sets weights ∝ 1 / class frequency (mean 1 over train rows);
    ``{"strategy": "none"}`` leaves 1/1. Rows whose label is None are left at 1/1.
    """
    strategy = spec.get("strategy", "none")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown balancing strategy {strategy!r}; expected one of {STRATEGIES}")
    out = df.copy()
    out["repeat"] = 1
    out["weight"] = 1.0
    train = out["split"].eq("train") & out[label].notna()
    if strategy == "none" or not train.any():
        return out
    counts = out.loc[train, label].value_counts()
    if strategy == "weights":
        w = (counts.sum() / (len(counts) * counts)).to_dict()
        out.loc[train, "weight"] = out.loc[train, label].map(w).astype(float)
        return out
    target = int(np.ceil(float(spec.get("target_ratio", 1.0)) * counts.max()))
    max_repeat = int(spec.get("max_repeat", 1000))
    rng = np.random.default_rng(seed)
    for cls in sorted(counts.index, key=str):
        n = int(counts[cls])
        if n >= target:
            continue
        idx = out.index[train & out[label].eq(cls)].to_numpy()
        base, extra = divmod(target, n)
        reps = np.full(n, base, dtype=int)
        reps[rng.permutation(n)[:extra]] += 1  # the seeded remainder: who gets one more draw
        out.loc[idx, "repeat"] = np.minimum(reps, max_repeat)
    return out


def class_counts(df: pd.DataFrame, label: str, weighted: bool = False) -> pd.Series:
    """Train-split draws per class: rows x repeat (x weight when ``weighted``)."""
    t = df[df["split"].eq("train") & df[label].notna()]
    draws = t["repeat"] * (t["weight"] if weighted else 1.0)
    return draws.groupby(t[label]).sum().sort_values(ascending=False)


def histogram_png(before: pd.Series, after: pd.Series, path: Path, title: str) -> Path:
    """Draw before/after class histograms side by side (matplotlib, Agg) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(before.index) + [c for c in after.index if c not in before.index]
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(classes) + 2), 3.6), dpi=90)
    ax.bar(x - 0.2, [before.get(c, 0) for c in classes], 0.4, label="before", color="#8c9fb7")
    ax.bar(x + 0.2, [after.get(c, 0) for c in classes], 0.4, label="after", color="#d9822b")
    ax.set_xticks(x, [str(c) for c in classes], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("train draws per epoch")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
