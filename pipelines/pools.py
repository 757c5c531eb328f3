"""The Airflow pools Tailor's tasks queue in; ``tailor up`` creates them (pipelines.services).

A task in a pool that does not exist is never scheduled, so the names live here once, for
the DAG files, the stages and the code that creates the pools.
"""

from __future__ import annotations

#: One slot: every DVC-committing task runs in it, so DAGs queue for it instead of failing
#: on DVC's own repository lock (:func:`pipelines.versioning.dvc_lock` covers the CLI too).
DVC_POOL = "tailor_dvc"

#: The training tasks. ``tailor up`` sizes it with :attr:`pipelines.settings.Settings.train_slots`
#: on the machine that runs the tasks, so the DAG file itself (parsed by the DAG processor,
#: maybe elsewhere) never reads a CPU count.
TRAIN_POOL = "tailor_train"
