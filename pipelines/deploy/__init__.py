"""Build, smoke-test, switch and roll back the search Bento; serving benchmarks.

Stages (each takes and returns small JSON-able dicts, as the ``deploy_bento`` DAG passes
them through XCom): :func:`pipelines.deploy.bundle.build_bundle` (resolve the champions to
exact versions and copy their artifacts + the index into a bundle directory) ->
:func:`pipelines.deploy.release.build_bento` -> :func:`pipelines.deploy.release.start_candidate`
(the idle slot) -> :func:`pipelines.deploy.release.smoke` -> :func:`pipelines.deploy.release.switch`
(public port). Importing this package is cheap (no torch, no bentoml).
"""
