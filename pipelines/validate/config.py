"""The validation and balancing configuration (``config/validation.yaml``, ``config/balancing.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import PROJECT_ROOT

VALIDATION_YAML = PROJECT_ROOT / "config" / "validation.yaml"
BALANCING_YAML = PROJECT_ROOT / "config" / "balancing.yaml"


def load_validation_config(path: Path | None = None) -> dict[str, Any]:
    """Read ``validation.yaml`` and resolve ``from_synth`` vocabularies to concrete lists."""
    cfg = yaml.safe_load(Path(path or VALIDATION_YAML).read_text())
    from pipelines.synth import TAXONOMY

    vocabs = {}
    for name, v in cfg["vocabularies"].items():
        vocabs[name] = list(TAXONOMY.categories) if v == "from_synth" else [str(x) for x in v]
    cfg["vocabularies"] = vocabs
    cfg.setdefault("sources", {})
    cfg.setdefault("ignored_labels", [])
    return cfg


def load_balancing_config(path: Path | None = None) -> dict[str, Any]:
    """Read ``balancing.yaml``."""
    return yaml.safe_load(Path(path or BALANCING_YAML).read_text())


def vocabulary_of(mall: str, cfg: dict[str, Any]) -> str:
    """The vocabulary name a mall's labels are checked against."""
    return cfg["sources"].get(mall, cfg.get("default_vocabulary", "taxonomy"))


def balancing_for(model: str, label: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The balancing spec of (model, label), falling back to ``default``."""
    spec = ((cfg.get("models") or {}).get(model) or {}).get(label)
    return dict(spec or cfg.get("default") or {"strategy": "none"})
