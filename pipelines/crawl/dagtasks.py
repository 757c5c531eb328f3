"""The functions the ``crawl_malls`` DAG's tasks call (plain data in, paths out)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.crawl.config import SHIPPED_MALLS, load_config
from pipelines.settings import get_settings


def plan_crawl(params: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    """One job per selected mall; the snapshot name is stable per DAG run (idempotent)."""
    s = get_settings()
    malls_file = params.get("malls_file") or str(SHIPPED_MALLS)
    cfg = load_config(malls_file).select(list(params.get("malls") or []))
    name = params.get("snapshot_name") or "crawl-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")
    out = params.get("out") or str(Path(s.data_dir) / "snapshots" / name)  # type: ignore[arg-type]
    limits = {k: params.get(k) for k in ("max_pages", "max_depth", "time_budget_s")}
    requested = [m.name for m in cfg.malls]
    return [
        {
            "malls_file": str(malls_file),
            "mall": m.name,
            "snapshot_name": name,
            "out": out,
            "polite": bool(params.get("polite", True)),
            "malls_requested": requested,
            **limits,
        }
        for m in cfg.malls
    ]


def crawl_one(job: dict[str, Any]) -> str:
    """Crawl one mall of a plan; returns its run directory (resumes a killed attempt)."""
    from pipelines.crawl.pipeline import crawl_mall, run_dir_for

    cfg = (
        load_config(job["malls_file"])
        .select([job["mall"]])
        .with_limits(job.get("max_pages"), job.get("max_depth"), job.get("time_budget_s"), job.get("polite", True))
    )
    return str(crawl_mall(cfg.malls[0], run_dir_for(job["snapshot_name"])))


def merge_snapshot(mall_dirs: list[str], job: dict[str, Any]) -> str:
    """Merge + dedup the malls' runs into the snapshot directory; returns its path."""
    from pipelines.crawl.pipeline import state_dir
    from pipelines.crawl.snapshot import write_snapshot

    write_snapshot(sorted(mall_dirs), Path(job["out"]), state_dir() / "blobs", requested=job.get("malls_requested"))
    return str(job["out"])
