"""Typer-annotated command functions; the main CLI registers them as
``tailor index build|update|search`` and ``tailor bench index``. Heavy modules load inside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _params(
    full: bool,
    recall: float | None,
    factory: str | None,
    embedder: str | None,
    training_set: Path | None,
    catalog: Path | None,
    images_root: Path | None,
) -> dict:
    return {
        "full_rebuild": full,
        "recall_target": recall,
        "factory": factory or "",
        "embedder": embedder or "",
        "training_set": str(training_set or ""),
        "catalog": str(catalog or ""),
        "images_root": str(images_root or ""),
    }


def index_build_command(
    recall: Annotated[float | None, typer.Option(help="Recall@10 target (default: config)")] = None,
    factory: Annotated[str | None, typer.Option(help="faiss factory string override")] = None,
    embedder: Annotated[str | None, typer.Option(help="champion | pixels | models:/ URI")] = None,
    training_set: Annotated[Path | None, typer.Option(help="training-set dir (default: latest)")] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog parquet instead of a training set")] = None,
    images_root: Annotated[Path | None, typer.Option(help="image root for --catalog")] = None,
) -> None:
    """Full build: embed the catalog, train + tune the index, register it as tailor-index@champion."""
    from pipelines.index.stages import run_all

    res = run_all(_params(True, recall, factory, embedder, training_set, catalog, images_root))
    typer.echo(
        f"index {res['index_dir']} v{res['version']} recall={res.get('recall')} "
        f"nprobe={res.get('nprobe')} k_factor={res.get('k_factor')}"
    )


def index_update_command(
    embedder: Annotated[str | None, typer.Option(help="champion | pixels | models:/ URI")] = None,
    training_set: Annotated[Path | None, typer.Option(help="training-set dir (default: latest)")] = None,
    catalog: Annotated[Path | None, typer.Option(help="catalog parquet instead of a training set")] = None,
    images_root: Annotated[Path | None, typer.Option(help="image root for --catalog")] = None,
) -> None:
    """Add new / remove removed products (a full rebuild when the embedder changed or lists drifted)."""
    from pipelines.index.stages import run_all

    res = run_all(_params(False, None, None, embedder, training_set, catalog, images_root))
    typer.echo(
        f"mode={res['mode']} {res.get('reasons') or ''} added={res.get('added', res.get('n'))} "
        f"removed={res.get('removed', 0)} -> {res['index_dir']} v{res['version']}"
    )


def index_search_command(
    image: Annotated[Path, typer.Argument(help="query image")],
    k: Annotated[int, typer.Option(help="results")] = 10,
    category: Annotated[str | None, typer.Option(help="restrict to one category")] = None,
    index: Annotated[str | None, typer.Option(help="index dir or URI (default: @champion)")] = None,
    embedder: Annotated[str | None, typer.Option(help="champion | pixels (must match the index)")] = None,
) -> None:
    """Search the index with one image; prints product ids with scores."""
    from PIL import Image

    from pipelines.index.stages import load_config, make_embed_fn
    from pipelines.index.store import champion_uri, load_index

    loaded = load_index(index or champion_uri())
    emb = embedder or ("pixels" if str(loaded.meta.get("embedder_version", "")).startswith("pixels") else "champion")
    fn = make_embed_fn(emb, load_config())
    with Image.open(image) as im:
        q = fn([im.convert("RGB")])
    for rank, hit in enumerate(loaded.search(q, k=k, category=category)[0], 1):
        typer.echo(f"{rank:3d}  {hit['score']:.4f}  {hit['product_id']}  {hit['category']}")


def bench_index_command(
    sizes: Annotated[str, typer.Option(help="comma-separated N")] = "10000,100000,1000000",
    dim: Annotated[int, typer.Option(help="vector dimension (the embedder's)")] = 128,
    queries: Annotated[int, typer.Option(help="held-out queries")] = 1000,
    catalog_vectors: Annotated[Path | None, typer.Option(help=".npy of real catalog embeddings")] = None,
) -> None:
    """Flat vs tuned IVF-PQ vs IVF-PQ fast-scan vs HNSW at each N: recall, latency, memory, build."""
    from pipelines.index.bench import print_table, run_benchmark

    rows = run_benchmark(
        [int(s) for s in sizes.split(",") if s], dim=dim, n_queries=queries, real_vectors=catalog_vectors
    )
    print_table(rows)
