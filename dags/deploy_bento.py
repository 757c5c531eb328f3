"""Deploy the search Bento: bundle -> build -> candidate (idle slot) -> smoke -> switch.

Scheduled on the Asset ``search-index`` (a new index means a new champion embedder or
catalog) and runnable by hand. The bundle pins the exact ``@champion`` versions and the
index built for the champion embedder. If any step fails, the candidate is stopped, the
previous deployment keeps serving on the public port and the run fails with the reason.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from pipelines.assets import DEPLOYMENT, SEARCH_INDEX


@dag(
    dag_id="deploy_bento",
    schedule=[SEARCH_INDEX],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two deploys must never race for the public port
    tags=["tailor", "serving"],
    params={
        "index_dir": Param(
            "", type="string", description="index directory; empty = the one built for the champion embedder"
        ),
        "bundle": Param(
            "", type="string", description="deploy this existing bundle directory instead of the champions"
        ),
        "build": Param(True, type="boolean", description="bentoml build (off: serve the source tree with the bundle)"),
    },
    doc_md=__doc__,
)
def deploy_bento():
    # Every stage runs inside the deploy's one failure path (pipelines.deploy.stages.failure_path),
    # as `tailor deploy run` does; cleanup below covers a task that died without raising.
    @task
    def bundle(params: dict | None = None, run_id: str | None = None) -> dict:
        from pipelines.deploy.stages import begin_stage, bundle_stage, failure_path
        from pipelines.params import check_dag_params

        p = {k: v for k, v in check_dag_params(params).items() if k in ("index_dir", "bundle") and v}
        owner = begin_stage(f"dag:{run_id}")  # held until switch or cleanup
        with failure_path("bundle", owner):
            return {**bundle_stage(p), "lease": owner}

    @task
    def build(rel: dict, params: dict | None = None) -> dict:
        from pipelines.deploy.stages import build_stage, failure_path

        if not (params or {}).get("build", True):
            return rel
        with failure_path("build", rel["lease"]):
            return build_stage(rel)

    @task
    def candidate(rel: dict) -> dict:
        from pipelines.deploy.lease import check
        from pipelines.deploy.stages import candidate_stage, failure_path

        check(rel["lease"])
        with failure_path("candidate", rel["lease"]):
            return candidate_stage(rel)

    @task
    def smoke(rel: dict) -> dict:
        from pipelines.deploy.stages import failure_path, smoke_stage

        with failure_path("smoke", rel["lease"]):
            return smoke_stage(rel)

    @task(outlets=[DEPLOYMENT])
    def switch(rel: dict) -> dict:
        from pipelines.deploy.lease import check
        from pipelines.deploy.stages import end_stage, failure_path, switch_stage

        check(rel["lease"])
        with failure_path("switch", rel["lease"]):
            out = switch_stage(rel)
        end_stage(rel["lease"])
        print(f"serving {out['id']} at {out['url']}: {out['versions']}")
        return {k: out[k] for k in ("id", "url", "versions", "previous")}

    @task(trigger_rule="one_failed")
    def cleanup(run_id: str | None = None) -> None:
        """Any failure: the deploy's one failure path (stop the candidate, record the
        failure, give the lease back; the public port was never touched, or was restored),
        then fail: as the run's leaf, this task decides the run's state."""
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.deploy.stages import fail_stage

        fail_stage(f"dag:{run_id}", "dag run", f"a task of deploy_bento run {run_id} failed (see its log)")
        raise AirflowFailException("deploy failed (see the failed task's log); the previous deployment keeps serving")

    rel = smoke(candidate(build(bundle())))
    done = switch(rel)
    [rel, done] >> cleanup()


deploy_bento()
