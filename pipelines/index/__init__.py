"""The search index: catalog embeddings in a faiss IVF-PQ index, tuned, versioned, updatable.

Public API (heavy modules are imported by the submodules, not here)::

    from pipelines.index.embed import embed_catalog, pixel_embed_fn, champion_embed_fn
    from pipelines.index.sizing import plan_index
    from pipelines.index.build import build_index, VectorIndex
    from pipelines.index.store import save_index, load_index, log_index
    from pipelines.index.update import update_index
    from pipelines.index.bench import run_benchmark, print_table

The search service reads an index only through :mod:`pipelines.index.flat`
(``load_index``: either format behind one ``search`` contract).
"""
