"""The training-set contract between ``validate_catalog`` (writer) and ``retrain_models`` (reader).

A training set is one immutable directory, written by the validate stage::

    TS/training_set.json     {"format": 1, "id", "snapshot_id", "annotations_id", "data_root",
                              "counts", "balancing", ...}
    TS/catalog.parquet       curated products (snapshot minus quarantine)
    TS/quarantine.parquet    rows that failed row-level expectations, with the reason
    TS/manifests/<model>.parquet   one per model (detector, parser, tagger, embedder)
    TS/histograms/*.png      class histograms before/after balancing

Every manifest row is one training/evaluation sample. Common columns:

- ``image``: path of the image file relative to ``TS / data_root`` (``data_root`` is
  recorded relative to the training-set directory, so the set is relocatable);
- ``split``: ``train`` | ``val`` | ``test`` (made by product and near-duplicate group);
- ``source``: ``synthetic`` | ``photos`` | the mall name;
- ``repeat``: how many times the row is drawn per epoch (>= 1; > 1 only on ``train``
  rows chosen by random oversampling, which training augments);
- ``weight``: class-balanced sampling weight (1.0 when the strategy is not weights).

Per-model columns (``None`` means "unknown": that head or target is masked, not guessed):

- detector: ``boxes`` (JSON list of ``{"bbox": [x, y, w, h], "category": str}``), ``width``, ``height``;
- parser: ``label_png`` (path relative to ``TS / data_root``), ``width``, ``height``;
- tagger: ``bbox`` (JSON ``[x, y, w, h]`` crop, or None for the whole image) and one column
  per head: ``category`` and every attribute in the taxonomy (``color``, ``pattern``, ...);
- embedder: ``bbox``, ``identity`` (product id, or None where only the category is
  known, e.g. real photos), ``category``, ``role`` (``shop`` | ``model`` | ``street``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models import MODEL_NAMES as MODELS

SPLITS = ("train", "val", "test")
COMMON_COLUMNS = ("image", "split", "source", "repeat", "weight")
MODEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "detector": ("boxes", "width", "height"),
    "parser": ("label_png", "width", "height"),
    "tagger": ("bbox", "identity", "category"),  # + one column per attribute head
    "embedder": ("bbox", "identity", "category", "role"),
}


class ManifestError(ValueError):
    """A training set or manifest that does not follow the contract."""


def read_training_set(ts_dir: Path) -> dict[str, Any]:
    """Load ``training_set.json`` and add ``dir`` and the absolute ``data_root``."""
    meta_file = Path(ts_dir) / "training_set.json"
    if not meta_file.exists():
        raise ManifestError(f"{ts_dir} is not a training set (no training_set.json)")
    meta = json.loads(meta_file.read_text())
    meta["dir"] = str(Path(ts_dir).resolve())
    meta["data_root_abs"] = str((Path(ts_dir) / meta.get("data_root", ".")).resolve())
    return meta


def load_manifest(ts_dir: Path, model: str, split: str | None = None):
    """The manifest of ``model`` as a DataFrame with absolute ``image`` (and ``label_png``) paths.

    Raises ManifestError naming the missing columns or the unknown model/split.
    """
    import pandas as pd

    if model not in MODELS:
        raise ManifestError(f"unknown model {model!r}; expected one of {MODELS}")
    if split is not None and split not in SPLITS:
        raise ManifestError(f"unknown split {split!r}; expected one of {SPLITS}")
    meta = read_training_set(ts_dir)
    path = Path(ts_dir) / "manifests" / f"{model}.parquet"
    if not path.exists():
        raise ManifestError(f"training set {ts_dir} has no manifest for {model} ({path})")
    df = pd.read_parquet(path)
    missing = [c for c in (*COMMON_COLUMNS, *MODEL_COLUMNS[model]) if c not in df.columns]
    if missing:
        raise ManifestError(f"{path} lacks columns {missing}")
    root = Path(meta["data_root_abs"])
    df["image"] = [str(root / p) for p in df["image"]]
    if model == "parser":
        df["label_png"] = [str(root / p) for p in df["label_png"]]
    if split is not None:
        df = df[df["split"] == split].reset_index(drop=True)
    return df


def validate_manifest_frame(df, model: str) -> None:
    """Check a manifest DataFrame before writing it: columns, splits, repeat/weight ranges."""
    missing = [c for c in (*COMMON_COLUMNS, *MODEL_COLUMNS[model]) if c not in df.columns]
    if missing:
        raise ManifestError(f"{model} manifest lacks columns {missing}")
    bad_split = set(df["split"]) - set(SPLITS)
    if bad_split:
        raise ManifestError(f"{model} manifest has unknown splits {sorted(bad_split)}")
    if (df["repeat"] < 1).any():
        raise ManifestError(f"{model} manifest has repeat < 1")
    if ((df["repeat"] > 1) & (df["split"] != "train")).any():
        raise ManifestError(f"{model} manifest oversamples outside the train split")
    if (df["weight"] <= 0).any():
        raise ManifestError(f"{model} manifest has non-positive weights")
