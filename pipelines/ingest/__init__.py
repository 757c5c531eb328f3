"""Ingest: turn a data source (a synthetic world's export, the real photos) into manifest
rows per model, the input of the validate stage's training-set writer. (Importing a COCO
annotation export into ``data/imports`` is :mod:`pipelines.validate.annotations`.)

- :func:`pipelines.ingest.world.world_manifest_rows` — a synthetic world;
- :func:`pipelines.ingest.photos.photo_manifest_rows` — the real photos, with derived boxes.

Rows carry no ``split``/``repeat``/``weight``: the validate stage adds those.
"""
