"""Crawl DAG stage: a polite, resumable Scrapy crawler writing DVC-versioned snapshots.

Public API (heavy modules load lazily)::

    from pipelines.crawl import crawl
    info = crawl("config/malls.yaml", out=None)   # -> {"path", "snapshot_id", "stats", ...}

Modules: ``config`` (typed malls file), ``spider`` / ``middlewares`` / ``extract`` /
``images`` (the Scrapy side, run per mall in a subprocess by ``run``), ``state`` (SQLite
run and state stores), ``stages`` (plan, crawl, merge, publish: what the DAG and the CLI
chain), ``pipeline`` (crawl one mall; ``crawl`` chains the stages), ``snapshot`` (merge,
dedup, write, DVC, restore), ``bench`` and ``cli``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["crawl", "crawl_mall", "load_config", "restore_snapshot"]


def __getattr__(name: str) -> Any:
    if name in ("crawl", "crawl_mall"):
        from pipelines.crawl import pipeline

        return getattr(pipeline, name)
    if name == "load_config":
        from pipelines.crawl.config import load_config

        return load_config
    if name == "restore_snapshot":
        from pipelines.crawl import snapshot

        return getattr(snapshot, name)
    raise AttributeError(name)
