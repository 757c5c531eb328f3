"""The validation and balancing configuration (``config/validation.yaml``, ``config/balancing.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import PROJECT_ROOT

VALIDATION_YAML = PROJECT_ROOT / "config" / "validation.yaml"
BALANCING_YAML = PROJECT_ROOT / "config" / "balancing.yaml"


#: vocabulary values in ``validation.yaml`` that stand for the product taxonomy's categories
#: (``from_synth`` is the old spelling, still accepted)
TAXONOMY_VALUES = ("taxonomy", "from_synth")


def load_validation_config(path: Path | None = None) -> dict[str, Any]:
    """Read ``validation.yaml``; resolve the ``taxonomy`` vocabulary to
    :data:`models.taxonomy.CATEGORIES` (every mall's labels are checked against it after
    :func:`models.taxonomy.to_category`)."""
    from models.taxonomy import CATEGORIES, NON_GARMENT

    cfg = yaml.safe_load(Path(path or VALIDATION_YAML).read_text())
    vocabs = {}
    for name, v in (cfg.get("vocabularies") or {"taxonomy": "taxonomy"}).items():
        vocabs[name] = list(CATEGORIES) if v in TAXONOMY_VALUES else [str(x) for x in v]
    cfg["vocabularies"] = vocabs
    cfg.setdefault("sources", {})
    cfg.setdefault("ignored_labels", list(NON_GARMENT))
    return cfg


def load_balancing_config(path: Path | None = None) -> dict[str, Any]:
    """Read ``balancing.yaml``."""
    return yaml.safe_load(Path(path or BALANCING_YAML).read_text())


def source_of(mall: str, cfg: dict[str, Any]) -> str:
    """The training-row source of a mall's products: ``photos`` for a real-photo mall (only
    its category is known), else the mall's own name (a demo mall of the synthetic world)."""
    return str(cfg["sources"].get(mall, mall))


def balancing_for(model: str, label: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The balancing spec of (model, label), falling back to ``default``."""
    spec = ((cfg.get("models") or {}).get(model) or {}).get(label)
    return dict(spec or cfg.get("default") or {"strategy": "none"})
