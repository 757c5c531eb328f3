"""``config/serving.yaml``: the search service's limits, search policy, look and runtime
settings, merged over built-in defaults and ``TAILOR_SERVE_<KEY>`` environment overrides.

Read by the service (``bentos``) and by the index build, which crops catalog images with
the service's own detector policy (``search.detector_score_min``, ``search.crop_context``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "serving.yaml"
#: Config used when the Bento is built without the repo's config/ (a container).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "limits": {
        "max_bytes": 10 * 1024 * 1024,
        "max_pixels": 12_000_000,
        "min_side": 8,
        "max_aspect": 10.0,
        "max_decodes": 2,
        "formats": ["JPEG", "PNG", "WEBP", "BMP", "GIF"],
    },
    "search": {
        "k_default": 10,
        "k_max": 100,
        "detector_score_min": 0.3,
        "max_garments": 8,
        "work_side": 1024,
        "crop_context": 0.3,
        "exact_photo_min": 0.97,
    },
    "look": {"covered_min": 0.35, "products": 6},
    "runtime": {
        "threads": 2,
        "timeout_s": 60,
        "batching": True,
        "max_batch_size": 32,
        "max_image_batch": 4,
        "image_workers": 2,
        "max_latency_ms": 30000,
    },
}


def _env_override(section: str, key: str, value: Any) -> Any:
    raw = os.environ.get(f"TAILOR_SERVE_{key.upper()}")
    if raw is None:
        return value
    if isinstance(value, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(value, int):
        return int(raw)
    if isinstance(value, float):
        return float(raw)
    if isinstance(value, list):
        return [v.strip() for v in raw.split(",") if v.strip()]
    return raw


@lru_cache(maxsize=4)
def load_config(path: str | None = None) -> dict[str, dict[str, Any]]:
    """``config/serving.yaml`` merged over the defaults, then ``TAILOR_SERVE_<KEY>`` env overrides."""
    cfg = {k: dict(v) for k, v in _DEFAULTS.items()}
    p = Path(path or os.environ.get("TAILOR_SERVE_CONFIG") or CONFIG_PATH)
    if p.exists():
        for section, values in (yaml.safe_load(p.read_text()) or {}).items():
            cfg.setdefault(section, {}).update(values or {})
    return {s: {k: _env_override(s, k, v) for k, v in vals.items()} for s, vals in cfg.items()}
