"""Tailor's search Bento: ``bentoml serve bentos.service:Tailor``.

Two services in one Bento:

* ``Tailor`` (public): the FastAPI app of :mod:`bentos.api` (``POST /search``, demo page,
  ``/info``, and the shopper routes of :mod:`bentos.shopper`: closet, look, attribute
  search) mounted at ``/``; BentoML adds ``/healthz``, ``/readyz`` (which calls
  ``__is_ready__`` and checks the dependency) and the OpenAPI spec (``/docs.json``, UI at
  ``/``). It runs detector + parser (batched across concurrent requests by a
  :class:`bentos.batching.MicroBatcher` when batching is on) and the index search.
* ``TailorCrops`` (internal): tagger + embedder on garment crops behind an adaptive-batching
  API, so crops from concurrent requests share one forward pass.

Both load one bundle directory (``TAILOR_BUNDLE_DIR``, default ``bentos/bundle`` inside the
Bento) in ``__init__`` and never read the live registry. Runtime knobs (threads, batching)
come from ``config/serving.yaml`` / ``TAILOR_SERVE_*`` at import time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from bentos._io import load_config
from bentos.api import build_app, connection_dropped

CONFIG = load_config()
RUNTIME = CONFIG["runtime"]
THREADS = int(RUNTIME["threads"])
BATCHING = bool(RUNTIME["batching"])
TIMEOUT_S = int(RUNTIME["timeout_s"])


def bundle_dir() -> Path:
    """The bundle this process serves: ``TAILOR_BUNDLE_DIR`` or ``bundle/`` next to this file."""
    return Path(os.environ.get("TAILOR_BUNDLE_DIR") or Path(__file__).resolve().parent / "bundle")


def _threads() -> None:
    import torch

    torch.set_num_threads(THREADS)


def _pack(tags: list[dict[str, tuple[str, float]]], emb: np.ndarray, vocab: dict[str, list[str]]) -> np.ndarray:
    """Tags + embeddings as one float32 array (N, D + 2 * heads): arrays batch natively."""
    heads = sorted(vocab)
    extra = np.array([[v for h in heads for v in (vocab[h].index(t[h][0]), t[h][1])] for t in tags], dtype=np.float32)
    return np.concatenate([emb.astype(np.float32), extra.reshape(len(tags), 2 * len(heads))], axis=1)


def _unpack(
    packed: np.ndarray, vocab: dict[str, list[str]], dim: int
) -> tuple[list[dict[str, tuple[str, float]]], np.ndarray]:
    heads = sorted(vocab)
    emb = np.ascontiguousarray(packed[:, :dim], dtype=np.float32)
    tags = [
        {h: (vocab[h][int(row[dim + 2 * j])], float(row[dim + 2 * j + 1])) for j, h in enumerate(heads)}
        for row in packed
    ]
    return tags, emb


@bentoml.service(name="tailor-crops", workers=1, resources={"cpu": str(THREADS)}, traffic={"timeout": TIMEOUT_S})
class TailorCrops:
    """Tagger + embedder on garment crops with adaptive batching across requests."""

    def __init__(self) -> None:
        from bentos.engine import read_manifest
        from models.checkpoint import load_dir

        _threads()
        d = bundle_dir()
        hashes = read_manifest(d).get("weights") or {}
        self.tagger = load_dir(d / "models" / "tagger", hashes.get("tagger"))
        self.embedder = load_dir(d / "models" / "embedder", hashes.get("embedder"))
        size = max(int(self.tagger.tailor_config["crop_size"]), int(self.embedder.tailor_config["crop_size"]))
        self.infer(np.zeros((1, size, size, 3), np.uint8))  # warm-up

    @bentoml.api(
        batchable=BATCHING,
        batch_dim=0,
        max_batch_size=int(RUNTIME["max_batch_size"]),
        max_latency_ms=int(RUNTIME["max_latency_ms"]),
    )
    def infer(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> (N, D + 2 * heads) float32 (see ``_pack``)."""
        from bentos import _adapters as A

        tags, emb = A.crop_forward(self.tagger, self.embedder, crops)
        return _pack(tags, emb, self.tagger.vocab)


#: Extra attempts of an internal crop call whose connection dropped.
_CROP_RETRIES = 2


def _engine() -> Any:
    return bentoml.get_current_service().engine


def _ready() -> bool:
    try:
        return bentoml.get_current_service().engine is not None
    except Exception:  # service not instantiated yet
        return False


def _store() -> Any:
    return bentoml.get_current_service().store


def _catalog() -> Any:
    from bentos._io import BadInput

    catalog = bentoml.get_current_service().catalog
    if catalog is None:
        raise BadInput(503, "no_attributes", "the served index has no catalog attributes: rebuild the index")
    return catalog


_bundle = bundle_dir()
app = build_app(
    _engine,
    CONFIG,
    catalog_images=_bundle / "index" / "images",
    is_ready=_ready,
    get_store=_store,
    get_catalog=_catalog,
)


@bentoml.service(
    name="tailor-search",
    workers=1,
    resources={"cpu": str(THREADS)},
    traffic={"timeout": TIMEOUT_S, "max_concurrency": 64},
)
@bentoml.asgi_app(app, path="/")
class Tailor:
    """Public search service (see module docstring)."""

    crops = bentoml.depends(TailorCrops)

    def __init__(self) -> None:
        from PIL import Image

        from bentos.catalog import CatalogView, NoAttributes
        from bentos.closet.store import ClosetStore
        from bentos.engine import Bundle, SearchEngine

        _threads()
        self.engine = None
        bundle = Bundle.load(bundle_dir())
        # Closets live outside the bundle (settings: closet_db_url, closet_dir), so every
        # release serves the same closets; migrations are applied before the first request.
        self.store = ClosetStore.from_settings()
        try:
            self.catalog = CatalogView(bundle.directory / "index", bundle.versions["index"])
        except NoAttributes:
            self.catalog = None
        search = CONFIG["search"]
        engine = SearchEngine(
            bundle,
            crop_fn=self._remote_crops,
            score_min=float(search["detector_score_min"]),
            max_garments=int(search["max_garments"]),
            work_side=int(search.get("work_side", 1024)),
            crop_context=float(search.get("crop_context", 0.1)),
            exact_photo_min=float(search.get("exact_photo_min", 0.0)),
        )
        # Detector + parser are most of a request's CPU. ``image_workers`` bounds how many of
        # their forward passes run at once in both modes, so batching on/off compare at equal
        # concurrency limits: with batching on a pass takes every photo queued (up to
        # ``max_image_batch``), with it off one photo (the unbatched server at its best limit).
        from bentos.batching import MicroBatcher

        workers = int(RUNTIME["image_workers"])
        self.image_batcher = MicroBatcher(
            engine.image_models,
            int(RUNTIME["max_image_batch"]) if BATCHING else 1,
            "image-models",
            workers=workers,
        )
        engine.image_fn = self.image_batcher
        # Unbatched, the crop service runs one call per request; the same limit bounds them.
        self._crop_slots = None if BATCHING else threading.BoundedSemaphore(workers)
        self._vocab = bundle.tagger.vocab
        self._dim = int(bundle.embedder.dim)
        # Warm detector and parser here (lazy init off the first request); the crop worker
        # warms itself and may still be starting, so its failure here is not fatal.
        try:
            engine.search(Image.new("RGB", (64, 64)), k=1)
        except Exception:
            pass
        self.engine = engine

    def _remote_crops(self, crops: np.ndarray) -> tuple[list[dict[str, tuple[str, float]]], np.ndarray]:
        # Inference is side-effect free, so a dropped internal connection is retried: under
        # concurrency BentoML's aiohttp client now and then reuses a keep-alive connection
        # the crop worker has just closed ("Server disconnected", bentoml/BentoML#3669).
        for attempt in range(_CROP_RETRIES + 1):
            try:
                if self._crop_slots is None:
                    packed = np.asarray(self.crops.infer(crops))
                else:
                    with self._crop_slots:
                        packed = np.asarray(self.crops.infer(crops))
                return _unpack(packed, self._vocab, self._dim)
            except Exception as exc:
                if attempt == _CROP_RETRIES or not connection_dropped(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def __is_ready__(self) -> bool:
        return self.engine is not None
