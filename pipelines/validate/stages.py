"""The validate stages: resolve -> validate -> build the training set -> version it.

The ``validate_catalog`` DAG runs one task per stage and ``tailor validate`` chains the
same functions (one failure path: a critical expectation raises in ``validate_stage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings


def resolve_stage(snapshot: str = "", events: list[dict[str, Any]] | None = None, s: Settings | None = None) -> str:
    """Snapshot path from the param, else from the triggering ``catalog`` event, else the latest."""
    if snapshot:
        return str(Path(snapshot).resolve())
    for ev in reversed(events or []):
        path = (ev or {}).get("path") or (ev or {}).get("snapshot")
        if path:
            return str(path)
    from pipelines.crawl.snapshot import latest_snapshot

    return str(latest_snapshot(s))


def validate_stage(snapshot: str, annotations: str = "", previous_rows: int = -1, s: Settings | None = None) -> str:
    """Validate and return the run directory; print where the report is. Raises on critical."""
    from pipelines.validate.checkpoint import run_name_of, runs_dir, validate_snapshot
    from pipelines.validate.errors import CriticalExpectationFailed
    from pipelines.validate.serve import summary_path
    from pipelines.validate.tables import snapshot_meta

    s = s or get_settings()
    from pipelines.validate.annotations import latest_annotations

    ann = Path(annotations) if annotations else latest_annotations(s)
    if ann is not None:
        print(f"annotations: {ann}")
    try:
        rep = validate_snapshot(
            Path(snapshot), annotations=ann, previous_rows=None if previous_rows < 0 else previous_rows, s=s
        )
    except CriticalExpectationFailed:
        print(
            f"data quality summary: {summary_path(s)}  (serve it: tailor quality report, "
            f"{s.url(s.report_port, '/tailor/index.html')})"
        )
        raise
    print(
        f"validation {rep['status']}: {rep['rows']} products, {rep['curated_rows']} curated, "
        f"quarantine {rep['quarantine_by_reason']}; warnings {rep['warnings_failed']}"
    )
    print(f"report: {rep['report_url']}")
    print(
        f"data quality summary: {summary_path(s)}  (serve it: tailor quality report, "
        f"{s.url(s.report_port, '/tailor/index.html')})"
    )
    return str(runs_dir(s) / run_name_of(snapshot_meta(Path(snapshot))))


def build_stage(run_dir: str, s: Settings | None = None) -> str:
    """Write the training set of a passed run; return its directory."""
    from pipelines.validate.training_set import build_training_set

    return str(build_training_set(Path(run_dir), s=s))


def version_stage(ts: str, s: Settings | None = None) -> dict[str, Any]:
    """DVC-commit the training set (data tree) and return ``{"path", "data_version"}``."""
    from pipelines.validate.training_set import version_training_set

    return version_training_set(Path(ts), s=s)
