"""Build, smoke-test, switch and roll back the search Bento; serving benchmarks.

Stages, in :mod:`pipelines.deploy.stages` (each takes and returns small JSON-able dicts, as
the ``deploy_bento`` DAG passes them through XCom; ``tailor deploy`` chains the same ones
in :func:`~pipelines.deploy.stages.deploy`): ``begin_stage`` (take the deploy lease) ->
``bundle_stage`` (:func:`pipelines.deploy.bundle.build_bundle`: resolve the champions to
exact versions and copy their weights + the index built for them into a bundle directory)
-> ``build_stage`` (:func:`pipelines.deploy.release.build_bento`) -> ``candidate_stage``
(:func:`pipelines.deploy.release.start_candidate`, the idle slot) -> ``smoke_stage``
(:func:`pipelines.deploy.smoke.smoke`) -> ``switch_stage``
(:func:`pipelines.deploy.release.switch`: the gateway on the public port moves to it) ->
``end_stage``. Any failure goes through one path, ``fail_stage`` / ``failure_path``: the
candidate is stopped, the failure recorded, the live release untouched.

Benchmarks of the served endpoint: :mod:`~pipelines.deploy.bench` (``tailor bench serve``),
:mod:`~pipelines.deploy.loadrun` (``bench load``), :mod:`~pipelines.deploy.photocheck`
(``bench photos``). Importing this package is cheap (no torch, no bentoml).
"""
