"""The crawl stages: plan -> crawl (one job per mall) -> merge -> publish.

The ``crawl_malls`` DAG runs one task per stage (``crawl_stage`` mapped over the plan's
jobs) and ``tailor crawl`` chains the same functions in one process
(:func:`pipelines.crawl.pipeline.crawl`). Each stage takes and returns plain JSON-able
data (dicts of paths and names), so the DAG passes only those through XCom.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.crawl.config import SHIPPED_MALLS, CrawlConfig, MallConfig, load_config
from pipelines.settings import Settings, get_settings


def snapshot_name_for_run(run_id: str) -> str:
    """The snapshot name of a DAG run: stable per run, so a retried run resumes its crawl."""
    return "crawl-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")


def plan_stage(
    malls: Path | str | CrawlConfig,
    names: list[str] | None = None,
    max_pages: int | None = None,
    max_depth: int | None = None,
    time_budget_s: float | None = None,
    polite: bool = True,
    snapshot_name: str | None = None,
    out: Path | str | None = None,
    state: Path | str | None = None,
    s: Settings | None = None,
) -> list[dict[str, Any]]:
    """One job per selected mall: its configuration with the limits applied, the snapshot
    it goes into and the crawler state directory (None: the worker's own
    ``settings.crawl_state_dir``, resolved where the job runs)."""
    from pipelines.crawl.pipeline import default_snapshot_name

    s = s or get_settings()
    cfg = malls if isinstance(malls, CrawlConfig) else load_config(malls)
    cfg = cfg.select(names).with_limits(max_pages, max_depth, time_budget_s, polite)
    name = snapshot_name or (Path(out).name if out else default_snapshot_name())
    snapshot = Path(out).resolve() if out else s.snapshots_dir / name
    requested = [m.name for m in cfg.malls]
    return [
        {
            "mall": m.model_dump(mode="json"),
            "snapshot_name": name,
            "out": str(snapshot),
            "state": str(state) if state else None,
            "malls_requested": requested,
        }
        for m in cfg.malls
    ]


def plan_from_params(params: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    """:func:`plan_stage` from the ``crawl_malls`` DAG's (checked) params."""
    return plan_stage(
        params.get("malls_file") or SHIPPED_MALLS,
        names=list(params.get("malls") or []) or None,
        max_pages=params.get("max_pages"),
        max_depth=params.get("max_depth"),
        time_budget_s=params.get("time_budget_s"),
        polite=bool(params.get("polite", True)),
        snapshot_name=params.get("snapshot_name") or snapshot_name_for_run(run_id),
        out=params.get("out") or None,
    )


def _state(job: dict[str, Any], s: Settings) -> Path:
    return Path(job["state"]) if job.get("state") else s.crawl_state_dir


def crawl_stage(job: dict[str, Any], s: Settings | None = None) -> str:
    """Crawl one mall of a plan (in a subprocess); returns its run directory. A finished
    run is not crawled again and a killed one resumes."""
    from pipelines.crawl.pipeline import crawl_mall, run_dir_for

    s = s or get_settings()
    state = _state(job, s)
    mall = MallConfig.model_validate(job["mall"])
    return str(crawl_mall(mall, run_dir_for(job["snapshot_name"], state=state), state, s))


def merge_stage(
    mall_dirs: list[str], job: dict[str, Any], started_at: float | None = None, s: Settings | None = None
) -> str:
    """Merge the malls' runs (dedup, near-duplicate groups) into the snapshot directory; returns it."""
    from pipelines.crawl.snapshot import write_snapshot

    s = s or get_settings()
    out = Path(job["out"])
    write_snapshot(sorted(mall_dirs), out, _state(job, s) / "blobs", started_at, requested=job.get("malls_requested"))
    return str(out)


def publish_stage(
    snapshot_dir: str, dvc: bool | None = None, push: bool = True, s: Settings | None = None
) -> dict[str, Any]:
    """Version the snapshot with DVC when it lies in the data tree (``dvc=False``: never) and
    register it as the newest; returns its description (``path``, ``snapshot_id``, ``stats``)."""
    from pipelines.crawl.snapshot import version_snapshot

    return version_snapshot(Path(snapshot_dir), dvc=dvc, push=push, s=s)
