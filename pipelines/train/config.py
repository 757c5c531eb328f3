"""Resolve a model's training configuration from ``config/train.yaml`` profiles + overrides."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from pipelines.settings import PROJECT_ROOT

CONFIG_FILE = PROJECT_ROOT / "config" / "train.yaml"
#: keys that never change what is learned, so a resume may differ in them
RUNTIME_KEYS = ("workers", "progress", "eval_limit")


def load_profiles(path: Path | None = None) -> dict[str, Any]:
    """The parsed YAML file (``common`` + ``profiles``)."""
    import yaml

    return yaml.safe_load(Path(path or CONFIG_FILE).read_text())


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def resolve_config(
    name: str, profile: str = "demo", overrides: dict[str, Any] | None = None, path: Path | None = None
) -> dict[str, Any]:
    """``common`` <- ``profiles[profile][name]`` <- ``overrides`` (dotted keys allowed).

    Raises KeyError naming the known profiles when ``profile`` is unknown.
    """
    data = load_profiles(path)
    profiles = data.get("profiles", {})
    if profile not in profiles:
        raise KeyError(f"unknown training profile {profile!r}; known: {sorted(profiles)}")
    cfg = copy.deepcopy(data.get("common", {}))
    cfg.update(copy.deepcopy(profiles[profile].get(name, {})))
    for k, v in (overrides or {}).items():
        _set_dotted(cfg, k, v)
    cfg["model"] = name
    cfg["profile"] = profile
    return cfg


def config_hash(cfg: dict[str, Any]) -> str:
    """A digest of everything that affects learning (runtime-only keys excluded)."""
    core = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]
