"""Rebuild or update the search index: plan -> embed -> build (or incremental update) -> attributes -> register.

Scheduled on ``champions`` (a new embedder: full rebuild), ``training-set`` and ``catalog``
(new/removed products: incremental update, or a rebuild when the coarse quantizer drifted),
and runnable by hand with params. Publishes the Asset ``search-index`` with the new version.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from pipelines.assets import CATALOG, CHAMPIONS, SEARCH_INDEX, TRAINING_SET


@dag(
    dag_id="rebuild_index",
    schedule=(CHAMPIONS | TRAINING_SET | CATALOG),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tailor", "index"],
    params={
        "full_rebuild": Param(False, type="boolean", description="rebuild even if an update would do"),
        "recall_target": Param(0.95, type="number", minimum=0, maximum=1, description="Recall@10 vs exact"),
        "factory": Param("", type="string", description="faiss factory override; empty = config/index.yaml"),
        "embedder": Param("champion", type="string", description="champion | pixels | models:/ URI"),
        "crop_with": Param(
            "", type="string", description="catalog crops: empty = config/index.yaml; none | champion | models:/ URI"
        ),
        "training_set": Param("", type="string", description="training-set dir; empty = latest"),
        "catalog": Param("", type="string", description="catalog parquet instead of a training set"),
        "images_root": Param("", type="string", description="image root for `catalog`"),
    },
    doc_md=__doc__,
)
def rebuild_index():
    @task
    def plan(params: dict | None = None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.index.stages import NoChampion, plan_stage
        from pipelines.params import check_dag_params

        try:
            spec = plan_stage(check_dag_params(params))
        except NoChampion as exc:
            raise AirflowSkipException(str(exc)) from exc
        print(f"mode={spec['mode']} reasons={spec['reasons']}")
        return spec

    @task
    def embed(spec: dict) -> dict:
        from pipelines.index.stages import embed_stage

        return embed_stage(spec)

    @task
    def build(spec: dict) -> dict:
        from pipelines.index.stages import build_stage

        return build_stage(spec)

    @task
    def attributes(info: dict) -> dict:
        from pipelines.index.stages import attributes_stage

        return attributes_stage(info)

    @task(outlets=[SEARCH_INDEX])
    def register(info: dict, outlet_events=None) -> dict:
        from pipelines.index.stages import register_stage

        res = register_stage(info)
        outlet_events[SEARCH_INDEX].extra = {
            "version": res["version"],
            "model_uri": res["model_uri"],
            "index_dir": res["index_dir"],
        }
        return {k: res.get(k) for k in ("version", "model_uri", "index_dir", "mode", "recall")}

    register(attributes(build(embed(plan()))))


rebuild_index()
