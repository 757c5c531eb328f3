"""The DEV path to a training set: a plain grouped random split of manifest rows.

For tests and for developing models before (or without) the validate stage. The
production writer is the validate stage's (expectations, quarantine, balancing); this one
only splits by ``group``, sets ``repeat`` = 1 and ``weight`` = 1, and writes the layout of
:mod:`pipelines.manifests`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def rebase_rows(rows: dict[str, Any], from_root: Path, to_root: Path) -> dict[str, Any]:
    """Make the relative ``image``/``label_png`` paths of ``rows`` (relative to ``from_root``)
    relative to ``to_root`` instead, so rows of two sources can share one data root."""
    out = {}
    for model, df in rows.items():
        df = df.copy()
        for col in ("image", "label_png"):
            if col in df:
                df[col] = [os.path.relpath(Path(from_root) / p, to_root) for p in df[col]]
        out[model] = df
    return out


def merge_rows(*parts: dict[str, Any]) -> dict[str, Any]:
    """Concatenate several ``{model: DataFrame}`` dicts model by model."""
    import pandas as pd

    out: dict[str, Any] = {}
    for part in parts:
        for model, df in part.items():
            out[model] = pd.concat([out[model], df], ignore_index=True) if model in out else df
    return out


def grouped_split(
    groups: list[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> dict[str, str]:
    """group -> split, from a hash of (seed, group): stable across models and row orders,
    so one product lands in the same split in every manifest."""
    out = {}
    for g in sorted(set(groups)):
        u = int(hashlib.sha256(f"{seed}:{g}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        out[g] = "train" if u < fractions[0] else "val" if u < fractions[0] + fractions[1] else "test"
    return out


def training_set_from_rows(
    rows: dict[str, Any],
    data_root: Path,
    out: Path,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Path:
    """Write a contract-conformant training set at ``out`` (dev path) and return ``out``.

    ``rows`` maps model -> DataFrame (paths relative to ``data_root``, a ``group`` column).
    """
    import pandas as pd

    from pipelines.manifests import validate_manifest_frame

    out = Path(out)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for model, df in rows.items():
        df = df.copy()
        group = df["group"] if "group" in df else df["image"]
        split_of = grouped_split(list(map(str, group)), seed, fractions)
        df["split"] = [split_of[str(g)] for g in group]
        df["repeat"] = 1
        df["weight"] = 1.0
        if "source" not in df:
            df["source"] = "synthetic"
        # parquet needs one type per column: keep None as None, everything else as text/number
        for col in df.columns:
            if df[col].dtype == object:
                df[col] = [None if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in df[col]]
        validate_manifest_frame(df, model)
        pd.DataFrame(df).to_parquet(out / "manifests" / f"{model}.parquet", index=False)
        counts[model] = {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")}
    digest = hashlib.sha256(json.dumps(counts, sort_keys=True).encode() + str(seed).encode()).hexdigest()[:12]
    meta = {
        "format": 1,
        "id": f"dev-{digest}",
        "snapshot_id": None,
        "annotations_id": None,
        "data_root": os.path.relpath(Path(data_root).resolve(), out.resolve()),
        "counts": counts,
        "balancing": {"strategy": "none (dev split)"},
        "dev": True,
        "seed": seed,
    }
    (out / "training_set.json").write_text(json.dumps(meta, indent=2))
    return out
