"""Retrain the four models, each as its own chain train -> evaluate -> gate.

Scheduled on the Asset ``training-set`` and runnable by hand with params. Each chain is a
mapped task, so models train in parallel on a distributed executor; a failed training
task retries and resumes from its last checkpoint. At most ``TAILOR_TRAIN_PARALLEL`` training
tasks run at once (default one per 2 CPU cores: on the 2-core default the four train one
after another, which is faster than four processes fighting over two cores). ``champions`` is updated only when the
gate promoted at least one model.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from models import MODEL_NAMES
from pipelines.assets import CHAMPIONS, TRAINING_SET
from pipelines.pools import TRAIN_POOL


@dag(
    dag_id="retrain_models",
    schedule=[TRAINING_SET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tailor", "models"],
    params={
        "models": Param(list(MODEL_NAMES), type="array", description="which models to retrain"),
        "profile": Param("demo", enum=["demo", "full"]),
        "epochs": Param(None, type=["null", "integer"], description="override the profile's epochs"),
        "thresholds": Param(
            {},
            type="object",
            description='gate threshold overrides, e.g. {"tagger": {"acc_min": 0.5}}; '
            "the margin over the trivial baseline still applies",
        ),
        "training_set": Param("", type="string", description="training-set dir; empty = latest"),
    },
    doc_md=__doc__,
)
def retrain_models():
    @task
    def plan(params: dict | None = None) -> list[dict]:
        from pipelines.params import check_dag_params
        from pipelines.train.stages import plan_stage

        params = check_dag_params(params)
        return plan_stage(
            params["models"], params["training_set"] or None, params["profile"], params["epochs"], params["thresholds"]
        )

    # At most Settings.train_slots trainings at once: the pool `tailor up` sizes where the
    # tasks run (not a CPU count read here, at parse time).
    @task(retries=2, retry_delay=pendulum.duration(seconds=10), pool=TRAIN_POOL)
    def train(spec: dict) -> dict:
        from pipelines.train.stages import train_stage

        return train_stage(spec)

    @task(retries=1)
    def evaluate(info: dict) -> dict:
        from pipelines.train.stages import evaluate_stage

        return evaluate_stage(info)

    @task
    def gate(info: dict) -> dict:
        from pipelines.train.stages import gate_stage, summarize

        decision = gate_stage(info)
        print(summarize([decision]))
        return decision

    @task(outlets=[CHAMPIONS])
    def publish(decisions: list[dict]) -> list[str]:
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.train.stages import publish_stage

        promoted = publish_stage(list(decisions))
        if not promoted:
            # Skipped tasks emit no Asset event: downstream index/deploy DAGs stay idle.
            raise AirflowSkipException("no champion changed")
        return promoted

    publish(gate.expand(info=evaluate.expand(info=train.expand(spec=plan()))))


retrain_models()
