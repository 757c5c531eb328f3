"""The one place where serving meets other teams' code (training, models, index).

Serving depends on three contracts: ``pipelines.train.predict/build_model`` (inference and
model construction), MLflow pytorch models (the bundle's artifacts) and the product index
(``pipelines.index``). Each is wrapped here, with a small fallback where the other side was
not ready when this was written, so a later change of their API is a fix in one file.

Index contract used by the service: ``load_index(dir)`` returns an object with
``search(vectors (N, D) float32, k, category=None) -> list[list[dict]]`` where each hit has
``product_id, title, mall, url, image_url, price, currency, category, score``, and an
``version`` attribute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models import MODEL_NAMES  # noqa: F401  (re-exported: the bundle layout)

PRODUCT_FIELDS = ("product_id", "title", "mall", "url", "image_url", "price", "currency", "category")


# --------------------------------------------------------------------------- models
def predict(name: str, model: Any, images: list[Any]) -> Any:
    """``pipelines.train.predict`` (detector/parser/tagger/embedder on PIL images)."""
    from pipelines.train import predict as _predict

    return _predict(name, model, images)


def build_model(name: str, config: dict[str, Any]) -> Any:
    """A freshly initialised model with ``tailor_config`` attached (tests, bench)."""
    from pipelines.train import build_model as _build

    return _build(name, config)


def resolve_config(name: str, profile: str = "demo") -> dict[str, Any]:
    """The training profile's config for ``name`` with the task's vocabularies filled in."""
    import pandas as pd

    from pipelines.train import get_task
    from pipelines.train.config import resolve_config as _resolve

    cfg = _resolve(name, profile)
    # prepare() derives vocabularies from the training frame; an empty frame with the
    # columns it reads gives the taxonomy's own vocabularies.
    frame = pd.DataFrame({"boxes": pd.Series([], dtype=object), "label": pd.Series([], dtype=object)})
    return get_task(name).prepare(cfg, frame) or cfg


def load_model(path: Path, expected_sha256: str | None) -> Any:
    """A model from a bundle's ``models/<model>/`` directory, ready for inference (eval mode,
    channels-last; ``pipelines.train.inference_ready``).

    Weights only (:mod:`models.checkpoint`), and only when the file's sha256 is the one the
    bundle manifest recorded (``expected_sha256``; None is refused: a bundle without
    recorded hashes predates weights-only bundles and must be rebuilt).
    """
    from models import checkpoint
    from pipelines.train import inference_ready

    path = Path(path)
    if not expected_sha256:
        raise checkpoint.UntrustedModel(
            f"{path}: the bundle manifest records no weights hash for it; rebuild the bundle"
        )
    return inference_ready(checkpoint.load(path / checkpoint.FILE, path.name, expected_sha256))


def save_model(model: Any, path: Path) -> str:
    """Write ``model`` (its ``tailor_config`` attached) into a bundle's ``models/<model>/``
    directory in the weights-only format; returns the file's sha256 for the manifest."""
    from models import checkpoint

    path = Path(path)
    return checkpoint.save(model, path.name, model.tailor_config, path / checkpoint.FILE)


def weights_hashes(bundle_dir: Path) -> dict[str, str]:
    """``{model: sha256}`` recorded in a bundle's manifest (empty for an old bundle)."""
    import json

    return dict(json.loads((Path(bundle_dir) / "manifest.json").read_text()).get("weights") or {})


def crop_batch(images: Sequence[Any], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 square crops (aspect kept, grey padding) as the tagger and
    embedder saw them in training (``square_crop`` with no context: the crop is the box)."""
    from pipelines.train.data import square_crop

    return np.stack(
        [np.asarray(square_crop(im.convert("RGB"), None, size, context=0.0), dtype=np.uint8) for im in images]
    )


def _shares_prefix(tagger: Any, embedder: Any) -> bool:
    """:func:`models._common.same_frozen_prefix`, computed once per model pair."""
    key = id(embedder)
    memo = tagger.__dict__.setdefault("_tailor_shares_prefix", {})
    if key not in memo:
        from models._common import same_frozen_prefix

        memo[key] = same_frozen_prefix(tagger, embedder)
    return memo[key]


def crop_forward(
    tagger: Any, embedder: Any, crops: np.ndarray
) -> tuple[list[dict[str, tuple[str, float]]], np.ndarray]:
    """Tagger + embedder on a uint8 crop batch; returns ``([{head: (value, prob)}], (N, D))``.

    Works on tensors (not PIL) so crops from many requests can be stacked into one batch.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        ts, es = int(tagger.tailor_config["crop_size"]), int(embedder.tailor_config["crop_size"])
        xt = x if x.shape[-1] == ts else F.interpolate(x, size=(ts, ts), mode="bilinear", align_corners=False)
        xe = x if x.shape[-1] == es else F.interpolate(x, size=(es, es), mode="bilinear", align_corners=False)
        if ts == es and _shares_prefix(tagger, embedder):
            f = tagger.prefix(xt)  # one frozen-trunk pass serves both heads
            logits, emb = tagger.from_prefix(f), embedder.from_prefix(f).float().numpy()
        else:
            logits = tagger(xt)
            emb = embedder(xe).float().numpy()
    tags: list[dict[str, tuple[str, float]]] = [{} for _ in range(x.shape[0])]
    for head, lg in logits.items():
        conf, idx = lg.softmax(1).max(1)
        for j in range(x.shape[0]):
            tags[j][head] = (tagger.vocab[head][int(idx[j])], float(conf[j]))
    return tags, emb.astype(np.float32)


# --------------------------------------------------------------------------- index
class FlatIndex:
    """Exact inner-product index (faiss ``IndexFlatIP``) + product metadata: the fallback
    used when ``pipelines.index`` is not available. Layout: ``vectors.npy``,
    ``products.jsonl`` (one row per vector, same order), ``index.json`` (version)."""

    def __init__(self, directory: Path) -> None:
        import faiss

        d = Path(directory)
        self.vectors = np.load(d / "vectors.npy").astype(np.float32)
        self.products = [json.loads(line) for line in (d / "products.jsonl").read_text().splitlines() if line.strip()]
        meta = json.loads((d / "index.json").read_text()) if (d / "index.json").exists() else {}
        self.version = str(meta.get("version", d.name))
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)
        self.categories = np.array([p.get("category", "") for p in self.products])

    def __len__(self) -> int:
        return len(self.products)

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[dict[str, Any]]]:
        """Top-``k`` products per query vector, optionally only those of ``category``."""
        q = np.ascontiguousarray(vectors, dtype=np.float32)
        if category is None:
            scores, ids = self.index.search(q, min(k, len(self)))
        else:
            # Exact filter: score the category's rows only (the catalog is small enough).
            rows = np.flatnonzero(self.categories == category)
            sims = q @ self.vectors[rows].T
            order = np.argsort(-sims, axis=1)[:, :k]
            ids = rows[order]
            scores = np.take_along_axis(sims, order, axis=1)
        out = []
        for srow, irow in zip(scores, ids, strict=True):
            out.append(
                [
                    {**{f: self.products[i].get(f) for f in PRODUCT_FIELDS}, "score": float(s)}
                    for s, i in zip(srow, irow, strict=True)
                    if i >= 0
                ]
            )
        return out


class _ExternalIndex:
    """Wraps ``pipelines.index``'s loaded index into the contract above."""

    def __init__(self, inner: Any, directory: Path) -> None:
        self.inner = inner
        meta = getattr(inner, "meta", None) or {}
        self.version = str(meta.get("version") or Path(directory).name)

    def __len__(self) -> int:
        return len(self.inner)

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[dict[str, Any]]]:
        res = self.inner.search(np.ascontiguousarray(vectors, dtype=np.float32), k, category=category)
        out = []
        for hits in res:
            row = []
            for h in hits:
                h = dict(h) if isinstance(h, dict) else dict(getattr(h, "__dict__", {}))
                row.append({**{f: h.get(f) for f in PRODUCT_FIELDS}, "score": float(h.get("score", 0.0))})
            out.append(row)
        return out


def load_index(directory: Path) -> Any:
    """The bundle's index: ``pipelines.index`` format when present, else :class:`FlatIndex`."""
    d = Path(directory)
    if (d / "vectors.npy").exists() and (d / "products.jsonl").exists():
        return FlatIndex(d)
    from pipelines.index.store import load_index as _load

    return _ExternalIndex(_load(d), d)


def build_flat_index(
    embedder: Any,
    products: list[dict[str, Any]],
    image_of: dict[str, Path],
    out: Path,
    version: str,
    batch: int = 32,
    detector: Any | None = None,
    score_min: float | None = None,
) -> Path:
    """Embed each product's shop image and write a :class:`FlatIndex` directory.

    Each image is a product shot embedded whole (``detector=None``, the crop policy of
    :mod:`pipelines.garments`), or cropped to ``detector``'s best box at ``score_min``
    (default ``search.detector_score_min``). Products without a readable image are skipped.
    """
    from PIL import Image

    from pipelines.index.embed import crop_embed_fn

    embed = crop_embed_fn(embedder, detector, score_min)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, vecs, imgs = [], [], []

    def flush() -> None:
        if imgs:
            vecs.append(embed(imgs))
            imgs.clear()

    for p in products:
        path = image_of.get(p["product_id"])
        try:
            with Image.open(path) as im:  # type: ignore[arg-type]
                imgs.append(im.convert("RGB"))
        except (OSError, TypeError):
            continue
        rows.append({f: p.get(f) for f in PRODUCT_FIELDS})
        if len(imgs) >= batch:
            flush()
    flush()
    np.save(out / "vectors.npy", np.concatenate(vecs) if vecs else np.zeros((0, 1), np.float32))
    (out / "products.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    (out / "index.json").write_text(json.dumps({"version": version, "kind": "flat-ip", "n": len(rows)}))
    return out


def world_catalog(
    world: Path, mall: str = "demo", base_url: str = "http://127.0.0.1:8001"
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Products of a synthetic world shaped like crawled products (title, mall, url, image_url,
    price, currency, category) and the path of each product's shop image."""
    from pipelines.synth import load_products

    products, images = [], {}
    for p in load_products(Path(world)):
        pid = p["product_id"]
        listed = p.get("listed") or {}
        products.append(
            {
                "product_id": pid,
                "title": p.get("title") or pid,
                "mall": mall,
                "url": f"{base_url}/product/{pid}",
                "image_url": f"{base_url}/images/shop/{pid}.jpg",
                "price": p.get("price"),
                "currency": p.get("currency"),
                "category": listed.get("category") or p.get("category"),
            }
        )
        images[pid] = Path(world) / "images" / "shop" / f"{pid}.jpg"
    return products, images
