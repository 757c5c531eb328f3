"""Embedding the catalog: image resolution, batching, and the embed functions.

``embed_fn(images: list[PIL.Image]) -> np.ndarray (N, D)`` with L2-normalised rows. Two
real implementations:

- :func:`champion_embed_fn`: the ``tailor-embedder@champion`` model through
  ``pipelines.train.predict``, on the crop the ``tailor-detector@champion`` picks, exactly
  as the search service crops a query (the production path);
- :func:`pixel_embed_fn`: a fixed random projection of downsampled pixels. Deterministic
  and dependency-free, so tests and the demo DAG run before a trained embedder exists
  (params ``embedder: pixels``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EmbedFn = Callable[[list[Any]], np.ndarray]

#: Columns of the id table, one row per vector.
ID_COLUMNS = ["vector_id", "product_id", "image", "category"]
#: Columns of the product-card table (``products.parquet``), one row per product.
CARD_COLUMNS = ["product_id", "title", "mall", "url", "image_url", "price", "currency"]


def pixel_embed_fn(dim: int = 128, size: int = 16, seed: int = 0) -> EmbedFn:
    """A deterministic embedder: RGB ``size``x``size`` thumbnail -> Gaussian projection -> unit vector."""
    proj = np.random.default_rng(seed).standard_normal((size * size * 3, dim)).astype(np.float32)
    proj /= np.sqrt(size * size * 3)

    def embed(images: list[Any]) -> np.ndarray:
        if not images:
            return np.zeros((0, dim), dtype=np.float32)
        px = np.stack([np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0 for im in images])
        px = px.reshape(len(images), -1)
        px -= px.mean(axis=1, keepdims=True)  # brightness-invariant, as a crude learned embedder would be
        v = px @ proj
        return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    embed.version = f"pixels-d{dim}-s{size}-seed{seed}"  # type: ignore[attr-defined]
    return embed


def resolve_model_uri(uri: str) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` -> (``NAME/v<N>``, ``models:/NAME/<N>``); other URIs unchanged."""
    from pipelines import registry

    client = registry._client()
    if uri.startswith("models:/") and "@" in uri:
        name, alias = uri[len("models:/") :].split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
        return f"{name}/v{mv.version}", f"models:/{name}/{mv.version}"
    if uri.startswith("models:/") and uri.count("/") == 2:
        name, number = uri[len("models:/") :].split("/")
        return f"{name}/v{number}", uri
    return uri, uri


def crop_version(embedder: str, detector: str | None) -> str:
    """The version an index records: the embedder's, plus the detector that chose the crops
    (``tailor-embedder/v3+crop:tailor-detector/v2``). A change of either forces a rebuild."""
    return f"{embedder}+crop:{detector}" if detector else embedder


def crop_embed_fn(
    embedder: Any, detector: Any | None, score_min: float | None = None
) -> Callable[[list[Any]], np.ndarray]:
    """Loaded models -> ``embed_fn`` for catalog images.

    ``detector=None`` (the default policy, :mod:`pipelines.garments`): each image is a
    product shot, embedded whole as the embedder's training drew shop shots
    (:func:`shot_embed_fn`). With a detector, each image is cropped to its best box
    (:func:`pipelines.garments.catalog_crop`; ``score_min`` defaults to the service's
    ``search.detector_score_min``) and embedded.
    """
    if detector is None:
        return shot_embed_fn(embedder)
    import torch

    from pipelines.garments import catalog_crop
    from pipelines.serving_config import load_config as serving_config
    from pipelines.train import predict

    search = serving_config()["search"]
    if score_min is None:
        score_min = float(search["detector_score_min"])
    context = float(search.get("crop_context", 0.1))
    size = int(embedder.tailor_config.get("crop_size", 224))

    @torch.no_grad()
    def embed(images: list[Any]) -> np.ndarray:
        if not images:
            return np.zeros((0, int(embedder.dim)), dtype=np.float32)
        dets = predict("detector", detector, images)
        crops = np.stack([catalog_crop(im, d, score_min, size, context) for im, d in zip(images, dets, strict=True)])
        return _embed_arrays(embedder, crops)

    return embed


def _embed_arrays(embedder: Any, crops: np.ndarray) -> np.ndarray:
    """The embedder on (N, S, S, 3) uint8 crops (as :func:`pipelines.garments.garment_crop` draws them)."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0)
        return embedder(x).numpy().astype(np.float32)


def shot_embed_fn(embedder: Any) -> EmbedFn:
    """``embed_fn`` of whole product shots, drawn as in training (:func:`pipelines.garments.garment_crop`).

    It also carries ``embed_paths(paths, progress)``, which :func:`embed_images` prefers:
    the embedder's frozen trunk output for a file is the very feature its training cached
    (:func:`pipelines.train.features.prefix_features`, same crop, same key), so a catalog
    that was in the training set costs only the trainable head, not a trunk pass per
    product; files the cache lacks are computed (and cached) the same way.
    """
    import torch

    from pipelines.garments import TRAIN_CONTEXT, garment_crop
    from pipelines.train.features import cache_enabled, prefix_features

    cfg = dict(getattr(embedder, "tailor_config", {}) or {})
    size = int(cfg.get("crop_size", 224))

    def embed(images: list[Any]) -> np.ndarray:
        if not images:
            return np.zeros((0, int(embedder.dim)), dtype=np.float32)
        return _embed_arrays(embedder, np.stack([garment_crop(im, None, size, TRAIN_CONTEXT) for im in images]))

    @torch.no_grad()
    def embed_paths(paths: list[str], progress: bool = True) -> np.ndarray:
        import pandas as pd

        feats = prefix_features(
            embedder, pd.DataFrame({"image": paths, "bbox": [None] * len(paths)}), cfg, progress=progress
        )
        out = [embedder.from_prefix(feats[i : i + 512]).numpy() for i in range(0, len(feats), 512)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, int(embedder.dim)), np.float32)

    if cache_enabled(cfg) and hasattr(embedder, "from_prefix"):
        embed.embed_paths = embed_paths  # type: ignore[attr-defined]
    return embed


def champion_embed_fn(
    model_uri: str = "models:/tailor-embedder@champion",
    crop_uri: str | None = "models:/tailor-detector@champion",
    score_min: float | None = None,
) -> EmbedFn:
    """The registered embedder (``@champion`` by default) behind the ``predict`` contract,
    cropping each image with the registered detector the way the search service does.

    The returned function carries ``version`` (see :func:`crop_version`), resolved from the
    aliases at load time, so the index records exactly which models it was built with.
    ``crop_uri=None`` embeds whole images. ``score_min`` defaults to the service's
    ``search.detector_score_min``.
    """
    from models import inference_ready
    from pipelines.registry import load_version

    # weights only, each checked against the hash recorded at registration
    emb_version, emb_uri = resolve_model_uri(model_uri)
    embedder = inference_ready(load_version(emb_uri))
    detector, det_version = None, None
    if crop_uri:
        det_version, det_uri = resolve_model_uri(crop_uri)
        detector = inference_ready(load_version(det_uri))
    embed = crop_embed_fn(embedder, detector, score_min)
    embed.version = crop_version(emb_version, det_version)  # type: ignore[attr-defined]
    return embed


def embedder_version(embed_fn: EmbedFn) -> str:
    """The version string an embed function carries (``unknown`` when it has none)."""
    return str(getattr(embed_fn, "version", "unknown"))


def catalog_images(catalog: Path, images_root: Path | None = None):
    """DataFrame ``product_id, category, image`` (absolute image path), one row per image to embed.

    Resolution order (the training-set layout may carry the image either way):
    1. an ``image`` column in the catalog (relative to ``images_root``, else to the data
       root of the training set the catalog belongs to: validation writes it);
    2. ``images.parquet`` beside the catalog (``product_id``, and ``image`` or crawl-snapshot
       ``sha256``/``ext`` blobs under ``images_root/images``), the first image per product
       by ``position`` / ``role == shop``;
    3. ``manifests/embedder.parquet`` beside the catalog (``identity`` = product id), shop
       images first.
    Products without an image are dropped (they cannot be searched by image).
    """
    import pandas as pd

    catalog = Path(catalog)
    root = Path(images_root) if images_root else catalog.parent
    cat = pd.read_parquet(catalog)
    if "product_id" not in cat.columns:
        raise ValueError(f"{catalog} has no product_id column")
    if "category" not in cat.columns:
        cat["category"] = "unknown"
    cat = cat.drop_duplicates("product_id")
    if "image" in cat.columns:
        imgs = cat.loc[cat["image"].notna(), ["product_id", "image"]]
        if images_root is None and (catalog.parent / "training_set.json").exists():
            from pipelines.manifests import read_training_set

            root = Path(read_training_set(catalog.parent)["data_root_abs"])
    elif (catalog.parent / "images.parquet").exists():
        imgs = pd.read_parquet(catalog.parent / "images.parquet")
        if "image" not in imgs.columns:
            imgs["image"] = [f"images/{s[:2]}/{s}.{e}" for s, e in zip(imgs["sha256"], imgs["ext"], strict=True)]
        imgs = _first_per_product(imgs, "product_id")[["product_id", "image"]]
    elif (catalog.parent / "manifests" / "embedder.parquet").exists():
        from pipelines.manifests import read_training_set

        man = pd.read_parquet(catalog.parent / "manifests" / "embedder.parquet")
        man = man[man["identity"].notna()].rename(columns={"identity": "product_id"})
        imgs = _first_per_product(man, "product_id")[["product_id", "image"]]
        if images_root is None and (catalog.parent / "training_set.json").exists():
            root = Path(read_training_set(catalog.parent)["data_root_abs"])
    else:
        raise ValueError(f"no image column, images.parquet or embedder manifest for {catalog}")
    df = cat[["product_id", "category"]].merge(imgs.drop_duplicates("product_id"), on="product_id", how="inner")
    df["image"] = [str(p if Path(p).is_absolute() else root / p) for p in df["image"]]
    df["product_id"] = df["product_id"].astype(str)
    df["category"] = df["category"].fillna("unknown").astype(str)
    return df.sort_values(["category", "product_id"], kind="stable").reset_index(drop=True)


def product_cards(catalog: Path):
    """DataFrame :data:`CARD_COLUMNS` from a catalog: what a search hit shows besides its id.

    ``image_url`` is the catalog's ``image_url`` or the first of its ``image_urls``; columns a
    catalog lacks (a hand-made one) are left empty rather than guessed.
    """
    import pandas as pd

    cat = pd.read_parquet(catalog).drop_duplicates("product_id")
    out = pd.DataFrame({"product_id": cat["product_id"].astype(str).to_numpy()})
    for c in CARD_COLUMNS[1:]:
        if c in cat.columns:
            out[c] = cat[c].to_numpy()
        elif c == "image_url" and "image_urls" in cat.columns:
            out[c] = [str(u[0]) if u is not None and len(u) else None for u in cat["image_urls"]]
        else:
            out[c] = None
    return out.astype(object).where(out.notna(), None)


def _first_per_product(df, key: str):
    df = df.copy()
    df["_shop"] = (df["role"] != "shop").astype(int) if "role" in df.columns else 0
    order = ["_shop"] + (["position"] if "position" in df.columns else [])
    return df.sort_values([key, *order], kind="stable").drop_duplicates(key)


def assign_ids(
    categories: list[str], known: dict[str, int] | None = None, next_seq: dict[str, int] | None = None
) -> tuple[np.ndarray, dict[str, int], dict[str, int]]:
    """Category-contiguous 64-bit vector ids (``code << 32 | seq``) for rows in ``categories``.

    ``known`` (category -> code) and ``next_seq`` (category -> next free sequence) carry over
    from an existing index so incremental updates never reuse or move an id.
    """
    from pipelines.index.build import CATEGORY_SHIFT

    codes = dict(known or {})
    seq = dict(next_seq or {})
    out = np.empty(len(categories), dtype=np.int64)
    for i, c in enumerate(categories):
        if c not in codes:
            codes[c] = max(codes.values(), default=-1) + 1
        s = seq.get(c, 0)
        out[i] = (codes[c] << CATEGORY_SHIFT) | s
        seq[c] = s + 1
    return out, codes, seq


def embed_images(
    paths: list[str], embed_fn: EmbedFn, batch_size: int = 64, progress: bool = True, label: str = "embed"
) -> np.ndarray:
    """Embed image files in batches (one batch of decoded images in memory at a time), or
    through ``embed_fn.embed_paths`` where it has one (:func:`shot_embed_fn`: cached trunk features)."""
    from PIL import Image

    if getattr(embed_fn, "embed_paths", None) is not None and paths:
        x = np.asarray(embed_fn.embed_paths(list(paths), progress), dtype=np.float32)  # type: ignore[attr-defined]
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out: list[np.ndarray] = []
    n = len(paths)
    for start in range(0, n, batch_size):
        batch = []
        for p in paths[start : start + batch_size]:
            with Image.open(p) as im:
                batch.append(im.convert("RGB"))
        v = np.asarray(embed_fn(batch), dtype=np.float32)
        if v.ndim != 2 or len(v) != len(batch):
            raise ValueError(f"embed_fn returned shape {v.shape} for {len(batch)} images")
        out.append(v)
        if progress:
            done = min(n, start + batch_size)
            print(f"\r{label}: {done}/{n} images", end="" if done < n else "\n", file=sys.stderr, flush=True)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    x = np.concatenate(out)
    # Normalise defensively: inner product == cosine only holds for unit rows.
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed_catalog(
    catalog: Path,
    images_root: Path | None,
    embed_fn: EmbedFn,
    batch_size: int = 64,
    progress: bool = True,
    known: dict[str, int] | None = None,
    next_seq: dict[str, int] | None = None,
):
    """Embed every catalog product image; returns ``(vectors, ids_table)``.

    ``ids_table`` (DataFrame, columns :data:`ID_COLUMNS`) maps row i of ``vectors`` ->
    ``vector_id`` (category-contiguous, see :func:`assign_ids`) -> ``product_id`` -> ``image``.
    Its ``attrs`` carry ``categories`` (category -> code) and ``next_seq`` for later updates.
    """
    df = catalog_images(Path(catalog), images_root)
    vectors = embed_images(df["image"].tolist(), embed_fn, batch_size, progress)
    ids, codes, seq = assign_ids(df["category"].tolist(), known, next_seq)
    df.insert(0, "vector_id", ids)
    table = df[ID_COLUMNS].copy()
    table.attrs["categories"] = codes
    table.attrs["next_seq"] = seq
    return vectors.astype(np.float32), table
