"""Persisting an index version and registering it in MLflow.

One index version is one directory, written once and never modified::

    DIR/meta.json      format, version, embedder version, snapshot id, factory, plan,
                       nprobe, k_factor, recall, latency, bytes/vector, tuning curve,
                       categories (name -> code), next_seq, imbalance at build
    DIR/base.faiss     the IVF-PQ base index (external ids)
    DIR/refine.faiss   the re-ranking store (absent when there is none)
    DIR/ids.parquet    vector_id -> product_id -> image, category
    DIR/products.parquet  product cards (title, mall, url, image_url, price, currency)

The directory is logged as run artifacts in experiment ``tailor-index`` and registered as
a pyfunc model ``tailor-index`` (its artifact is the same directory), and ``@champion``
moves to it last, so ``load_index("models:/tailor-index@champion")`` always loads one
consistent version: index, id map and metadata from the same directory.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings

FORMAT = 1
MODEL = "index"  # registry.registered_name("index") == "tailor-index"


@dataclass
class LoadedIndex:
    """An index version in memory: the faiss index, its id table and its metadata."""

    index: Any  # VectorIndex
    ids: Any  # DataFrame, one row per vector
    meta: dict[str, Any]
    path: Path
    products: Any = None  # DataFrame of product cards, or None (an index saved without them)

    def search(self, queries: Any, k: int = 10, category: str | list[str] | None = None) -> list[list[dict]]:
        """Product ids with scores per query; see :func:`pipelines.index.search.search`."""
        from pipelines.index.search import search

        return search(self, queries, k=k, category=category)


def new_version_id(meta: dict[str, Any]) -> str:
    """``idx-<UTC time>-<hash of the inputs>``: sortable and unique per build."""
    key = json.dumps(
        {k: meta.get(k) for k in ("embedder_version", "snapshot_id", "factory", "ntotal")}, sort_keys=True, default=str
    )
    return f"idx-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{hashlib.sha1(key.encode()).hexdigest()[:6]}"


def index_root(s: Settings | None = None) -> Path:
    """Where index versions are written: ``<var_dir>/index``."""
    s = s or get_settings()
    return s.index_dir


def save_index(
    index: Any, ids: Any, meta: dict[str, Any], out: Path | None = None, s: Settings | None = None, products: Any = None
) -> Path:
    """Write one index version directory (atomically: temp dir, then rename). Returns its path.

    ``products`` (see :func:`pipelines.index.embed.product_cards`) is kept for the products the
    index holds, so search hits can be shown without the catalog."""
    import faiss

    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("version", new_version_id(meta))
    meta["ntotal"] = int(index.ntotal)
    meta["nprobe"], meta["k_factor"] = int(index.nprobe), int(index.k_factor)
    meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta["bytes"] = int(index.nbytes())
    meta["bytes_per_vector"] = meta["bytes"] / max(1, index.ntotal)
    meta["info"] = index.info
    out = Path(out) if out else index_root(s) / meta["version"]
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index.base, str(tmp / "base.faiss"))
    if index.refine is not None:
        faiss.write_index(index.refine, str(tmp / "refine.faiss"))
    ids.to_parquet(tmp / "ids.parquet", index=False)
    if products is not None:
        products[products["product_id"].isin(set(ids["product_id"]))].to_parquet(tmp / "products.parquet", index=False)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _resolve_dir(uri_or_dir: str | Path, s: Settings | None = None) -> Path:
    p = Path(str(uri_or_dir))
    if p.exists():
        if (p / "meta.json").exists():
            return p
        found = sorted(p.rglob("meta.json"))
        if found:
            return found[0].parent
        raise FileNotFoundError(f"{p} holds no index (meta.json)")
    uri = str(uri_or_dir)
    if ":/" not in uri:
        raise FileNotFoundError(f"no index directory {uri}")
    import mlflow

    from pipelines import registry

    registry._client(s)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    return _resolve_dir(local, s)


def load_index(uri_or_dir: str | Path, s: Settings | None = None) -> LoadedIndex:
    """Load an index version from a directory or an MLflow URI (``models:/tailor-index@champion``,
    ``models:/tailor-index/3``, ``runs:/<id>/index``)."""
    import faiss
    import pandas as pd

    from pipelines.index.build import VectorIndex

    d = _resolve_dir(uri_or_dir, s)
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{d}: unsupported index format {meta.get('format')}")
    base = faiss.read_index(str(d / "base.faiss"))
    refine = faiss.read_index(str(d / "refine.faiss")) if (d / "refine.faiss").exists() else None
    index = VectorIndex(
        base=base,
        refine=refine,
        nprobe=int(meta["nprobe"]),
        k_factor=int(meta["k_factor"]),
        info=dict(meta.get("info") or {}),
    )
    ids = pd.read_parquet(d / "ids.parquet")
    if len(ids) != index.ntotal:
        raise ValueError(f"{d}: id table has {len(ids)} rows but the index {index.ntotal} vectors")
    products = pd.read_parquet(d / "products.parquet") if (d / "products.parquet").exists() else None
    return LoadedIndex(index=index, ids=ids, meta=meta, path=d, products=products)


def log_index(index_dir: Path, promote: bool = True, s: Settings | None = None) -> dict[str, str]:
    """Log ``index_dir`` as an MLflow run (experiment ``tailor-index``) and register it.

    Params: factory and plan; metrics: recall, latency, bytes/vector, ntotal, the tuning
    curve (step = position on the curve); tags: embedder version, snapshot id. The
    registered version gets the same tags, then ``@champion`` moves to it (last, so a reader
    never sees a champion without its tags). Returns ``{"run_id", "version", "model_uri"}``.
    """
    import mlflow

    from pipelines import registry
    from pipelines.index.pyfunc import IndexModel

    s = s or get_settings()
    client = registry._client(s)
    exp_id = registry.ensure_experiment(MODEL, s)
    name = registry.registered_name(MODEL)
    index_dir = Path(index_dir)
    meta = json.loads((index_dir / "meta.json").read_text())
    tags = {
        "index.version": meta["version"],
        "embedder.version": str(meta.get("embedder_version")),
        "data.snapshot": str(meta.get("snapshot_id")),
        "index.kind": str(meta.get("kind", "build")),
    }
    with mlflow.start_run(experiment_id=exp_id, run_name=meta["version"]) as run:
        mlflow.set_tags(tags)
        plan = meta.get("plan", {})
        mlflow.log_params(
            {
                "factory": meta.get("factory"),
                "refine": str(plan.get("refine")),
                "nlist": plan.get("nlist"),
                "m": plan.get("m"),
                "nbits": plan.get("nbits"),
                "train_size": plan.get("train_size"),
                "nprobe": meta["nprobe"],
                "k_factor": meta["k_factor"],
                "recall_target": meta.get("recall_target"),
            }
        )
        metrics = {
            k: float(meta[k])
            for k in (
                "recall",
                "ms_per_query",
                "ms_per_query_batched",
                "bytes_per_vector",
                "ntotal",
                "build_s",
                "imbalance",
            )
            if isinstance(meta.get(k), int | float)
        }
        mlflow.log_metrics(metrics)
        for step, row in enumerate(meta.get("curve", [])):
            mlflow.log_metrics(
                {"curve_recall": row["recall"], "curve_nprobe": row["nprobe"], "curve_k_factor": row["k_factor"]},
                step=step,
            )
        mlflow.log_artifacts(str(index_dir), "index")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=IndexModel(),
            artifacts={"index": str(index_dir)},
            pip_requirements=["faiss-cpu", "pandas", "numpy"],
            registered_model_name=name,
            await_registration_for=60,
        )
        version = str(info.registered_model_version)
    for k, v in {**tags, "index.recall": str(meta.get("recall"))}.items():
        client.set_model_version_tag(name, version, k, v)
    if promote:
        client.set_registered_model_alias(name, registry.CHAMPION, version)
    return {"run_id": run.info.run_id, "version": version, "model_uri": f"models:/{name}/{version}"}


def champion_uri() -> str:
    """URI of the serving index: ``models:/tailor-index@champion``."""
    from pipelines import registry

    return f"models:/{registry.registered_name(MODEL)}@{registry.CHAMPION}"


def current_champion_dir(s: Settings | None = None) -> Path | None:
    """Local directory of the ``@champion`` index (downloaded), or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return _resolve_dir(champion_uri(), s)
    except (MlflowException, FileNotFoundError, OSError):
        return None
