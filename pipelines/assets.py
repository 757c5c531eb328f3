"""The Airflow Assets that chain the DAGs: one definition each, imported by every DAG file.

A typo in a URI would silently cut the chain (a DAG scheduled on an Asset nobody
publishes never runs), so the URIs live here only, and ``tests/test_dags.py`` checks that
every Asset a DAG is scheduled on is published by another DAG's task.

    crawl_malls --CATALOG--> validate_catalog --TRAINING_SET--> retrain_models --CHAMPIONS-->
    rebuild_index (also on CATALOG, TRAINING_SET) --SEARCH_INDEX--> deploy_bento --DEPLOYMENT
    demo_world --DEMO_WORLD (the demo malls serve the new world)
"""

from __future__ import annotations

from airflow.sdk import Asset

CATALOG = Asset("tailor://catalog")
TRAINING_SET = Asset("tailor://training-set")
CHAMPIONS = Asset("tailor://champions")
SEARCH_INDEX = Asset("tailor://search-index")
DEPLOYMENT = Asset("tailor://search-deployment")
DEMO_WORLD = Asset("tailor://demo-world")

#: Assets published for people and other systems, not for a DAG of this project.
TERMINAL = (DEPLOYMENT, DEMO_WORLD)
