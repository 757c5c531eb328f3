"""Validate a crawl snapshot and publish a balanced, versioned training set.

Scheduled on the ``catalog`` Asset (emitted by ``crawl_malls``) and runnable by hand for a
given snapshot. Wiring only: each task calls one ``pipelines.validate.stages`` function and
passes paths through XCom. A critical expectation failure fails ``validate`` with a message
naming the expectations and the report, so nothing downstream runs and ``training-set`` is
not updated; warnings pass and are printed.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from pipelines.assets import CATALOG, TRAINING_SET
from pipelines.pools import DVC_POOL  # commits to DVC run one at a time


@dag(
    dag_id="validate_catalog",
    schedule=[CATALOG],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tailor", "validate"],
    params={
        "snapshot": Param("", type="string", description="snapshot directory; empty = the triggering/latest crawl"),
        "annotations": Param("", type="string", description="annotation import dir; empty = newest under data/imports"),
        "previous_rows": Param(-1, type="integer", description="products to compare with; -1 = last passed snapshot"),
    },
    doc_md=__doc__,
)
def validate_catalog():
    @task
    def resolve(params: dict | None = None, triggering_asset_events=None) -> str:
        from pipelines.params import check_dag_params
        from pipelines.validate import stages

        params = check_dag_params(params)  # snapshot and annotations (the validate task reads the same)
        events = []
        for evs in (triggering_asset_events or {}).values():
            events += [dict(e.extra or {}) for e in evs]
        return stages.resolve_stage(params["snapshot"], events)

    @task(retries=0)  # a critical failure is a data problem: retrying cannot fix it
    def validate(snapshot: str, params: dict | None = None) -> str:
        from pipelines.validate import stages

        return stages.validate_stage(snapshot, params["annotations"], params["previous_rows"])

    @task(max_active_tis_per_dag=1)
    def build_training_set(run_dir: str) -> str:
        from pipelines.validate import stages

        return stages.build_stage(run_dir)

    # DVC takes a repository lock: one DVC task at a time.
    @task(max_active_tis_per_dag=1, outlets=[TRAINING_SET], pool=DVC_POOL)
    def version(training_set: str, outlet_events=None) -> str:
        from pipelines.validate import stages

        info = stages.version_stage(training_set)
        if outlet_events is not None:
            outlet_events[TRAINING_SET].extra = {"path": info["path"], "data_version": info["data_version"]}
        return info["path"]

    version(build_training_set(validate(resolve())))


validate_catalog()
