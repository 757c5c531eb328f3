"""The functions the ``validate_catalog`` DAG and the CLI call (one per task)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings


def latest_snapshot(s: Settings | None = None) -> Path:
    """The newest snapshot the crawler registered (``var/crawl-state/snapshots.jsonl``)."""
    s = s or get_settings()
    reg = Path(s.var_dir) / "crawl-state" / "snapshots.jsonl"  # type: ignore[arg-type]
    if reg.exists():
        lines = [json.loads(x) for x in reg.read_text().splitlines() if x.strip()]
        if lines:
            return Path(lines[-1]["path"])
    snaps = sorted((Path(s.data_dir) / "snapshots").glob("*/snapshot.json"))  # type: ignore[arg-type]
    if not snaps:
        raise FileNotFoundError("no crawl snapshot registered; run `tailor crawl` or pass snapshot=")
    return snaps[-1].parent


def resolve_snapshot(snapshot: str = "", events: list[dict[str, Any]] | None = None, s: Settings | None = None) -> str:
    """Snapshot path from the param, else from the triggering ``catalog`` event, else the latest."""
    if snapshot:
        return str(Path(snapshot).resolve())
    for ev in reversed(events or []):
        path = (ev or {}).get("path") or (ev or {}).get("snapshot")
        if path:
            return str(path)
    return str(latest_snapshot(s))


def latest_annotations(s: Settings | None = None) -> Path | None:
    """The newest finished annotation import under ``data/imports`` (None when there is none).

    Crawled snapshots carry product labels only; boxes and masks come from an imported
    annotation export, so a validation triggered by a new crawl pairs it with the newest one.
    """
    s = s or get_settings()
    imports = [p.parent for p in (Path(s.data_dir) / "imports").glob("*/import.json")]  # type: ignore[arg-type]
    return max(imports, key=lambda p: (p / "import.json").stat().st_mtime) if imports else None


def run_validation(snapshot: str, annotations: str = "", previous_rows: int = -1, s: Settings | None = None) -> str:
    """Validate and return the run directory; print where the report is. Raises on critical."""
    from pipelines.validate.checkpoint import run_name_of, runs_dir, validate_snapshot
    from pipelines.validate.errors import CriticalExpectationFailed
    from pipelines.validate.serve import summary_path
    from pipelines.validate.tables import snapshot_meta

    s = s or get_settings()
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


def build(run_dir: str, s: Settings | None = None) -> str:
    """Write the training set of a passed run; return its directory."""
    from pipelines.validate.training_set import build_training_set

    return str(build_training_set(Path(run_dir), s=s))


def version(ts: str, s: Settings | None = None) -> dict[str, Any]:
    """DVC-commit the training set (data tree) and return ``{"path", "data_version"}``."""
    from pipelines.validate.training_set import version_training_set

    return version_training_set(Path(ts), s=s)
