"""The crawl as functions the CLI and the DAG call: one mall, then a snapshot of all.

Layout under the state directory (default ``settings.var_dir / "crawl-state"``)::

    <mall>.sqlite            what the last finished crawl of the mall knew (incremental)
    blobs/<sha[:2]>/<sha>.*  content-addressed image store shared by every run
    runs/<run id>/<mall>/    one run: run.sqlite (item store), mall.json, crawl.log

A run id is derived from the snapshot name, so re-running the same crawl (a retried DAG
task, a restart after a kill) resumes the same run instead of starting over.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipelines.crawl.config import ConfigError, CrawlConfig, MallConfig
from pipelines.crawl.state import Store
from pipelines.settings import PROJECT_ROOT, Settings, get_settings


def state_dir(s: Settings | None = None) -> Path:
    """Where crawl state lives: ``<var_dir>/crawl-state``."""
    s = s or get_settings()
    return s.crawl_state_dir


def default_snapshot_name(now: float | None = None) -> str:
    """``crawl-YYYYmmddTHHMMSSZ`` (UTC)."""
    return time.strftime("crawl-%Y%m%dT%H%M%SZ", time.gmtime(now))


def _run_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def run_dir_for(snapshot_name: str, s: Settings | None = None, state: Path | None = None) -> Path:
    """The run directory a snapshot named ``snapshot_name`` is crawled into."""
    return (state or state_dir(s)) / "runs" / _run_id(snapshot_name)


def crawl_mall(
    mall: MallConfig,
    run_dir: Path,
    state: Path | None = None,
    s: Settings | None = None,
    timeout_s: float | None = None,
) -> Path:
    """Crawl one mall into ``run_dir/<mall>/`` in a subprocess; return that directory.

    Idempotent: a finished run is not crawled again; an unfinished one (killed) resumes.
    After the crawl, products the previous crawl knew but this one did not see are carried
    over flagged ``removed`` (only when the crawl was complete: a crawl cut short by a
    limit proves nothing about absence), and the mall's state store is updated.
    """
    s = s or get_settings()
    state = Path(state or state_dir(s))
    mall_dir = Path(run_dir) / mall.name
    mall_dir.mkdir(parents=True, exist_ok=True)
    run_db = mall_dir / "run.sqlite"
    with Store(run_db) as store:
        if store.get_meta("finalised"):
            return mall_dir
    (mall_dir / "mall.json").write_text(mall.model_dump_json(indent=1))
    from pipelines.crawl.images import sweep_temp_files

    sweep_temp_files(state / "blobs")  # what a killed crawl left half-written
    cmd = [
        sys.executable,
        "-m",
        "pipelines.crawl.run",
        "--mall-json",
        str(mall_dir / "mall.json"),
        "--run-db",
        str(run_db),
        "--state-db",
        str(state / f"{mall.name}.sqlite"),
        "--blobs",
        str(state / "blobs"),
        "--log-file",
        str(mall_dir / "crawl.log"),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    limit = timeout_s or mall.politeness.time_budget_s + 120
    proc = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=limit)
    with Store(run_db) as store:
        if proc.returncode != 0 or not store.get_meta("finished"):
            tail = (proc.stderr or proc.stdout)[-3000:]
            raise RuntimeError(f"crawl of {mall.name} failed (exit {proc.returncode}): {tail}")
    finalise_mall(mall.name, run_db, state / f"{mall.name}.sqlite", mall.politeness.max_error_rate)
    return mall_dir


#: failure kinds that say the mall (not our policy) failed a request: an outage's signature
OUTAGE_KINDS = ("http", "timeout", "network")


def _is_outage(failure: dict) -> bool:
    """A failure that says the mall could not answer (5xx, timeout, network), not that a page is gone."""
    if failure["kind"] not in OUTAGE_KINDS:
        return False
    return failure["kind"] != "http" or not failure.get("status") or int(failure["status"]) >= 500


def _completeness(run: Store, errors: int, max_error_rate: float) -> tuple[bool, str | None]:
    """Whether a finished run saw the whole mall, and if not, why.

    ``errors``: the run's outage failures (:func:`_is_outage`). Incomplete: a limit or the
    time budget cut it short; robots.txt denied everything or no
    page was fetched (mall down); or more than ``max_error_rate`` of the requests (pages and images) failed
    with 5xx, a timeout or a network error (an outage mid-crawl). 404/410 are answers, not
    errors: they are how a removed product shows.
    """
    if run.get_meta("close_reason") != "finished":
        return False, f"crawl ended by {run.get_meta('close_reason')}"
    if run.get_meta("limit_hit"):
        return False, f"limit reached: {run.get_meta('limit_hit')}"
    pages = run.count("pages")
    if pages == 0:
        return False, "no page fetched (robots.txt denied everything or the mall is down)"
    asked = pages + run.count("images") + errors
    rate = errors / asked
    if rate > max_error_rate:
        return False, f"error rate {rate:.2f} > {max_error_rate:.2f} ({errors} of {asked} requests failed)"
    return True, None


def finalise_mall(mall: str, run_db: Path, state_db: Path, max_error_rate: float = 0.5) -> dict[str, int]:
    """Carry unseen products over as removed, then make this run the mall's state.

    Only a complete run (:func:`_completeness`) marks the products it did not see as removed,
    and never one whose page failed with an outage error (5xx, timeout, network) this run:
    those are kept as they were, ``not_visited``.
    """
    with Store(run_db) as run, Store(state_db) as st:
        if run.get_meta("finalised"):
            return run.get_meta("finalise_counts", {})
        # A crawl that fetched no page at all (mall down, robots.txt unreachable: fail closed)
        # proves nothing about absence either: keep the mall's products, not_visited.
        outages = [f for f in run.failures() if _is_outage(f)]
        complete, why = _completeness(run, len(outages), max_error_rate)
        run.set_meta("incomplete_reason", why)
        # a page that answered 5xx / timed out this run says nothing about its product either
        unreachable = {f["url"] for f in outages}
        seen = run.products(mall)
        prev = st.products(mall)
        carried = 0
        rows = []
        for pid, p in prev.items():
            if pid in seen:
                continue
            if p.get("removed") or (complete and not {p.get("url"), p.get("page_url")} & unreachable):
                p = dict(p, removed=1, status="removed" if not p.get("removed") else p["status"])
            else:
                p = dict(p, status="not_visited")  # limit reached: keep as it was
            rows.append(p)
            carried += 1
        run.put_many("products", rows)
        # A product kept as it was keeps its images (the snapshot links them from the run store).
        known, have = st.images(), run.images()
        run.put_many(
            "images",
            [
                known[u]
                for p in rows
                if not p.get("removed")
                for u in p["image_urls"]
                if u in known and u not in have and known[u].get("sha256")
            ],
        )
        st.con.execute("DELETE FROM products WHERE mall=?", (mall,))
        st.put_many("products", run.products(mall).values())
        st.put_many("images", [r for r in run.images().values() if r.get("sha256")])
        counts = {"seen": len(seen), "carried": carried, "complete": int(complete)}
        run.set_meta("finalise_counts", counts)
        run.set_meta("finalised", True)
        return counts


def crawl(
    malls: Path | str | CrawlConfig,
    out: Path | None = None,
    names: list[str] | None = None,
    max_pages: int | None = None,
    max_depth: int | None = None,
    time_budget_s: float | None = None,
    polite: bool = True,
    snapshot_name: str | None = None,
    state: Path | None = None,
    dvc: bool | None = None,
    push: bool = True,
    s: Settings | None = None,
    parallel: int | None = None,
) -> dict[str, Any]:
    """Crawl the configured malls into a new immutable snapshot; return its description.

    The stages of :mod:`pipelines.crawl.stages` chained in this process (``tailor crawl``),
    as the ``crawl_malls`` DAG runs them. Malls are crawled concurrently, one Scrapy process
    each (``parallel`` at a time, default: every mall, at most 4), as the DAG's mapped tasks
    do; politeness is per mall.

    ``out`` defaults to ``<data_dir>/snapshots/<snapshot_name>``. When ``out`` lies in the
    project's data tree the snapshot is added to DVC (and pushed); ``dvc=False`` skips that.
    The returned dict has ``path``, ``snapshot_id`` (``<data.dvc md5>:<relative path>``
    or None without DVC), ``stats`` and the per-mall run directories.
    """
    from pipelines.crawl import stages

    s = s or get_settings()
    jobs = stages.plan_stage(
        malls, names, max_pages, max_depth, time_budget_s, polite, snapshot_name, out, state or state_dir(s), s
    )
    if not jobs:
        raise ConfigError("no mall selected")
    t0 = time.time()
    workers = max(1, min(parallel or len(jobs), 4, len(jobs)))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads only wait on subprocesses
        mall_dirs = list(pool.map(lambda job: stages.crawl_stage(job, s), jobs))
    snapshot = stages.merge_stage(mall_dirs, jobs[0], started_at=t0, s=s)
    return stages.publish_stage(snapshot, dvc=dvc, push=push, s=s)
