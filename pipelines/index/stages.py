"""Index stages for the ``rebuild_index`` DAG and the CLI: plan -> embed -> build/update -> attributes -> register.

Each stage takes and returns small JSON-able dicts of paths, so Airflow passes only those
through XCom. Vectors travel as ``.npy`` files in a work directory under ``var/index-work``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import PROJECT_ROOT, Settings, get_settings

CONFIG = PROJECT_ROOT / "config" / "index.yaml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """``config/index.yaml`` as a dict."""
    return yaml.safe_load(Path(path or CONFIG).read_text()) or {}


class NoChampion(RuntimeError):
    """A model the index is built with has no ``@champion`` yet: nothing to index with."""


def catalog_crop_uri(cfg: dict[str, Any] | None = None) -> str | None:
    """``embed.crop_with``: the detector that crops catalog images, or None (the default:
    catalog images are product shots, embedded whole; see :mod:`pipelines.garments`)."""
    cfg = load_config() if cfg is None else cfg
    return (cfg.get("embed") or {}).get("crop_with") or None


def _model_uris(embedder: str, cfg: dict[str, Any]) -> tuple[str, str | None]:
    """(embedder URI, cropping detector URI or None) for ``champion`` or an explicit ``models:/`` URI."""
    uri = "models:/tailor-embedder@champion" if embedder == "champion" else embedder
    return uri, catalog_crop_uri(cfg)


def with_crop_policy(cfg: dict[str, Any], crop_with: str | None) -> dict[str, Any]:
    """``cfg`` with ``embed.crop_with`` replaced by a run's choice: ``""``/None keeps the
    config's, ``none`` embeds catalog shots whole, ``champion`` crops them with
    ``tailor-detector@champion``, a ``models:/`` URI with that detector."""
    if not crop_with:
        return cfg
    uri = None if crop_with == "none" else "models:/tailor-detector@champion" if crop_with == "champion" else crop_with
    return {**cfg, "embed": {**(cfg.get("embed") or {}), "crop_with": uri}}


def _spec_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The index config a planned run uses: the file's, with the crop policy fixed at plan time."""
    return with_crop_policy(load_config(), spec.get("crop_with") or "none") if "crop_with" in spec else load_config()


def make_embed_fn(embedder: str, cfg: dict[str, Any]) -> Any:
    """``champion`` -> the registered ``tailor-embedder@champion`` on whole catalog shots (or
    ``embed.crop_with``'s crops); ``pixels`` -> pixel projection."""
    from pipelines.index.embed import champion_embed_fn, pixel_embed_fn

    if embedder == "pixels":
        return pixel_embed_fn(dim=int((cfg.get("embed") or {}).get("pixel_dim", 128)))
    uri, crop = _model_uris(embedder, cfg)
    return champion_embed_fn(uri, crop_uri=crop)


def _embedder_version(embedder: str, cfg: dict[str, Any]) -> str:
    """The version an embedder would stamp, without loading the model."""
    from pipelines.index.embed import (
        crop_version,
        embedder_version,
        pixel_embed_fn,
        resolve_model_uri,
    )

    if embedder == "pixels":
        return embedder_version(pixel_embed_fn(dim=int((cfg.get("embed") or {}).get("pixel_dim", 128))))
    from mlflow.exceptions import MlflowException

    uri, crop = _model_uris(embedder, cfg)
    try:
        return crop_version(resolve_model_uri(uri)[0], resolve_model_uri(crop)[0] if crop else None)
    except MlflowException as exc:
        # A crawl or training set can arrive before any model was promoted.
        raise NoChampion(f"cannot resolve {uri} / {crop}: run retrain_models first ({exc.message})") from exc


def _check_catalog(catalog: Path) -> None:
    """A clear error, before anything is written, for a catalog that cannot be indexed."""
    import pyarrow.parquet as pq

    if not catalog.is_file():
        raise FileNotFoundError(f"catalog {catalog} does not exist; nothing to index")
    rows = pq.ParquetFile(catalog).metadata.num_rows
    if rows == 0:
        raise ValueError(f"catalog {catalog} has no products; nothing to index (the previous index keeps serving)")


def plan_stage(params: dict[str, Any], s: Settings | None = None) -> dict[str, Any]:
    """Resolve the inputs and decide full rebuild vs incremental update.

    ``params``: ``full_rebuild`` (bool), ``recall_target`` (float), ``factory`` (str, empty =
    config), ``embedder`` (``champion``|``pixels``), ``training_set`` (dir, empty = latest),
    ``catalog``/``images_root`` (explicit files instead of a training set).
    """
    from pipelines.index.store import current_champion_dir

    s = s or get_settings()
    cfg = with_crop_policy(load_config(), params.get("crop_with"))
    embedder = params.get("embedder") or (cfg.get("embed") or {}).get("embedder", "champion")
    catalog = params.get("catalog") or ""
    images_root = params.get("images_root") or ""
    snapshot_id = params.get("snapshot_id") or ""
    if not catalog:
        from pipelines.manifests import read_training_set
        from pipelines.validate.training_set import latest_training_set

        ts = Path(params.get("training_set") or latest_training_set(s))
        meta = read_training_set(ts)
        catalog = str(ts / "catalog.parquet")
        images_root = images_root or meta["data_root_abs"]
        snapshot_id = snapshot_id or str(meta.get("snapshot_id", ""))
    _check_catalog(Path(catalog))
    version = _embedder_version(embedder, cfg)
    champion = current_champion_dir(s)
    reasons: list[str] = []
    if params.get("full_rebuild"):
        reasons.append("full rebuild requested")
    if params.get("factory"):
        reasons.append(f"factory override {params['factory']}")
    if champion is None:
        reasons.append("no index yet")
    else:
        old = json.loads((champion / "meta.json").read_text()).get("embedder_version")
        if old != version:
            reasons.append(f"embedder changed: {old} -> {version}")
    work = s.index_work_dir / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    return {
        "mode": "full" if reasons else "update",
        "reasons": reasons,
        "embedder": embedder,
        "embedder_version": version,
        "crop_with": catalog_crop_uri(cfg),
        "catalog": str(catalog),
        "images_root": str(images_root),
        "snapshot_id": snapshot_id,
        "champion_dir": str(champion) if champion else None,
        "recall_target": float(params.get("recall_target") or (cfg.get("tune") or {}).get("recall_target", 0.95)),
        "factory": params.get("factory") or None,
        "work": str(work),
    }


def embed_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """Full mode: embed the whole catalog to ``work/vectors.npy`` + ``work/ids.parquet``.
    Update mode: nothing to do here (only new products are embedded, inside the update)."""
    import numpy as np

    from pipelines.index.embed import embed_catalog

    if spec["mode"] != "full":
        return spec
    cfg = _spec_config(spec)
    embed_fn = make_embed_fn(spec["embedder"], cfg)
    vectors, table = embed_catalog(
        Path(spec["catalog"]),
        Path(spec["images_root"]) if spec["images_root"] else None,
        embed_fn,
        batch_size=int((cfg.get("embed") or {}).get("batch_size", 64)),
    )
    work = Path(spec["work"])
    np.save(work / "vectors.npy", vectors)
    table.to_parquet(work / "ids.parquet", index=False)
    (work / "ids_attrs.json").write_text(json.dumps(table.attrs))
    return {**spec, "vectors": str(work / "vectors.npy"), "ids": str(work / "ids.parquet"), "n": int(len(table))}


def build_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """Full: build + tune + save a new version. Update: apply the catalog diff to the champion,
    falling back to a full rebuild when :func:`pipelines.index.update.rebuild_reasons` says so."""
    import numpy as np
    import pandas as pd

    from pipelines.index.build import build_index
    from pipelines.index.embed import product_cards
    from pipelines.index.store import save_index
    from pipelines.index.update import update_index

    cfg = _spec_config(spec)
    if spec["mode"] == "update":
        res = update_index(
            Path(spec["champion_dir"]),
            Path(spec["catalog"]),
            Path(spec["images_root"]) if spec["images_root"] else None,
            make_embed_fn(spec["embedder"], cfg),
            cfg,
            snapshot_id=spec["snapshot_id"] or None,
        )
        if res["path"]:
            return {**spec, **res, "index_dir": res["path"]}
        spec = embed_stage({**spec, "mode": "full", "reasons": res["rebuild"]})
    vectors = np.load(spec["vectors"])
    table = pd.read_parquet(spec["ids"])
    attrs = json.loads((Path(spec["work"]) / "ids_attrs.json").read_text())
    index, meta = build_index(
        vectors, table["vector_id"].to_numpy(), cfg, recall_target=spec["recall_target"], factory=spec.get("factory")
    )
    meta.update(
        {
            "kind": "build",
            "embedder_version": spec["embedder_version"],
            "snapshot_id": spec["snapshot_id"],
            "catalog": spec["catalog"],
            "categories": attrs["categories"],
            "next_seq": attrs["next_seq"],
            "ntotal_at_build": int(index.ntotal),
            "reasons": spec["reasons"],
        }
    )
    path = save_index(index, table, meta, products=product_cards(Path(spec["catalog"])))
    return {
        **spec,
        "index_dir": str(path),
        "recall": meta["recall"],
        "nprobe": index.nprobe,
        "k_factor": index.k_factor,
    }


def champion_tagger() -> tuple[Any | None, str | None]:
    """(``tailor-tagger@champion`` ready for inference, its version) or (None, None) when no
    tagger has been promoted yet."""
    from mlflow.exceptions import MlflowException

    from models import inference_ready
    from pipelines.index.embed import resolve_model_uri
    from pipelines.registry import load_version

    try:
        version, uri = resolve_model_uri("models:/tailor-tagger@champion")
    except MlflowException:
        return None, None
    return inference_ready(load_version(uri)), version


def attributes_stage(info: dict[str, Any]) -> dict[str, Any]:
    """Tag every product of the new index version with the champion tagger and lay the
    catalog out in 2-D (:mod:`pipelines.index.attributes`), stored in the version's directory.
    An index built with the pixel embedder gets the map but no tags."""
    from pipelines.index.attributes import index_attributes

    cfg = _spec_config(info)
    tagger, version = champion_tagger() if info["embedder"] != "pixels" else (None, None)
    summary = index_attributes(
        Path(info["index_dir"]), Path(info["catalog"]), make_embed_fn(info["embedder"], cfg), tagger, version
    )
    return {**info, "tagger_version": version, "attributes": summary["n"]}


def register_stage(info: dict[str, Any]) -> dict[str, Any]:
    """Log and register the new version in MLflow and move ``tailor-index@champion`` to it."""
    from pipelines.index.store import log_index

    logged = log_index(Path(info["index_dir"]))
    return {**info, **logged}


def run_all(params: dict[str, Any]) -> dict[str, Any]:
    """The whole DAG in-process (the CLI's ``tailor index build|update``)."""
    return register_stage(attributes_stage(build_stage(embed_stage(plan_stage(params)))))
