"""Crawl the configured malls into a new immutable, DVC-versioned snapshot (Asset: catalog).

Wiring only: each task calls one ``pipelines.crawl.stages`` function and passes paths
through XCom. One mapped task per mall (each crawls in its own subprocess, resumable: a
retry continues the same run), then merge + dedup into the snapshot directory, then one
DVC commit (never two at once) that updates the ``catalog`` Asset.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from pipelines.assets import CATALOG
from pipelines.pools import DVC_POOL  # commits to DVC run one at a time


@dag(
    dag_id="crawl_malls",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tailor", "crawl"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "malls_file": Param("", type="string", description="malls YAML; empty = config/malls.yaml"),
        "malls": Param([], type="array", description="mall names to crawl; empty = all"),
        "max_pages": Param(None, type=["null", "integer"], minimum=1),
        "max_depth": Param(None, type=["null", "integer"], minimum=0),
        "time_budget_s": Param(None, type=["null", "number"], minimum=1),
        "polite": Param(True, type="boolean", description="false only for your own test servers"),
        "snapshot_name": Param("", type="string", description="empty = derived from the run id"),
        "out": Param("", type="string", description="snapshot dir; empty = data/snapshots/<name>"),
    },
    doc_md=__doc__,
)
def crawl_malls():
    @task
    def plan(params: dict | None = None, run_id: str | None = None) -> list[dict]:
        from pipelines.crawl.stages import plan_from_params
        from pipelines.params import check_dag_params

        return plan_from_params(check_dag_params(params), run_id or "manual")

    @task(retries=3, retry_exponential_backoff=True, execution_timeout=timedelta(hours=3))
    def crawl_mall(job: dict) -> str:
        from pipelines.crawl.stages import crawl_stage

        return crawl_stage(job)

    @task
    def merge(mall_dirs: list[str], jobs: list[dict]) -> str:
        from pipelines.crawl.stages import merge_stage

        return merge_stage(list(mall_dirs), jobs[0])

    # One DVC writer at a time (DVC also takes its own repo lock).
    @task(outlets=[CATALOG], max_active_tis_per_dag=1, pool=DVC_POOL)
    def publish(snapshot_dir: str, outlet_events=None) -> dict:
        from pipelines.crawl.stages import publish_stage

        info = publish_stage(snapshot_dir)
        if outlet_events is not None:
            outlet_events[CATALOG].extra = {"snapshot": info["snapshot_id"], "path": info["path"]}
        return {"snapshot_id": info["snapshot_id"], "path": info["path"]}

    jobs = plan()
    publish(merge(crawl_mall.expand(job=jobs), jobs))


crawl_malls()
