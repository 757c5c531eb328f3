"""Validate-and-balance stage: GX suites on a crawl snapshot, quarantine, splits, oversampling.

Public API (heavy modules — pandas, great_expectations, matplotlib — load lazily)::

    from pipelines.validate import validate_snapshot, build_training_set
    run = validate_snapshot(snapshot_dir)          # -> report dict; raises CriticalExpectationFailed
    ts = build_training_set(run["run_dir"])        # -> data/training-sets/<id>

Modules: ``config`` (YAML), ``tables`` (frames built from a snapshot), ``suites`` (the GX
project), ``checkpoint`` (run, severity, quarantine), ``splits``, ``balance``,
``training_set`` (the manifest writer), ``annotations`` (COCO import), ``report`` (summary
page) and ``serve`` (``tailor quality report``).
"""

from __future__ import annotations

from typing import Any

from pipelines.validate.errors import CriticalExpectationFailed

__all__ = ["CriticalExpectationFailed", "build_training_set", "import_annotations", "validate_snapshot"]

_LAZY = {
    "validate_snapshot": "pipelines.validate.checkpoint",
    "build_training_set": "pipelines.validate.training_set",
    "import_annotations": "pipelines.validate.annotations",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
