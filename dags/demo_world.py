"""Regenerate the synthetic fashion world that the demo malls serve (the embedded default).

Wiring only: each task calls one ``pipelines.synth.stages`` function and passes paths
through XCom.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from pipelines.assets import DEMO_WORLD


@dag(
    dag_id="demo_world",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["tailor", "synth"],
    params={
        "seed": Param(0, type="integer", description="same seed and options give the same bytes"),
        "products": Param(480, type="integer", minimum=10),
        "scenes": Param(200, type="integer", minimum=0),
        "out": Param("", type="string", description="output directory; empty = settings' demo world"),
    },
    doc_md=__doc__,
)
def demo_world():
    @task(retries=2)
    def generate(params: dict | None = None) -> str:
        from pipelines.params import check_dag_params
        from pipelines.synth.stages import generate_stage

        p = check_dag_params(params)
        return generate_stage(p["seed"], p["products"], p["scenes"], p["out"] or None)

    @task(outlets=[DEMO_WORLD])
    def contact_sheet(world: str) -> str:
        from pipelines.synth.stages import preview_stage

        return preview_stage(world)

    contact_sheet(generate())


demo_world()
