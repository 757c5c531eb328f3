"""The search pipeline behind ``POST /search``: detect -> parse -> crop -> tag + embed -> search.

:class:`Bundle` loads one model bundle (``manifest.json`` + four MLflow model directories +
the index directory) and nothing else: a running service never reads the live registry, so
a later promotion does not change it. :class:`SearchEngine` runs one photo through the
pipeline; the tagger + embedder step is a callable so the BentoML service can route it
through its adaptive-batching worker while tests call it in-process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import MODEL_NAMES
from models.checkpoint import load_dir
from pipelines.garments import TRAIN_CONTEXT, garment_crop, select_garments
from pipelines.index.flat import load_index

from . import _adapters as A

#: ``crops (N, S, S, 3) uint8 -> ([{head: (value, prob)}], embeddings (N, D))``
CropFn = Callable[[np.ndarray], tuple[list[dict[str, tuple[str, float]]], np.ndarray]]
#: ``photo -> (detections {boxes, scores, categories}, parser label map (H, W))``
ImageFn = Callable[[Any], tuple[dict[str, Any], np.ndarray]]
#: Tag heads that are not garment attributes (category is reported separately).
_NOT_ATTRIBUTES = {"category", "label"}


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """The bundle's ``manifest.json`` (``versions`` of the four models and the index)."""
    return json.loads((Path(bundle_dir) / "manifest.json").read_text())


@dataclass
class Bundle:
    """The loaded models and index of one bundle directory."""

    directory: Path
    manifest: dict[str, Any]
    detector: Any
    parser: Any
    tagger: Any
    embedder: Any
    index: Any

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        """Load every model (eval mode) and the index; raises when any part is missing."""
        d = Path(directory)
        manifest = read_manifest(d)
        hashes = manifest.get("weights") or {}
        loaded = {m: load_dir(d / "models" / m, hashes.get(m)) for m in MODEL_NAMES}
        return cls(directory=d, manifest=manifest, index=load_index(d / "index"), **loaded)

    @property
    def versions(self) -> dict[str, str]:
        """Exact versions: ``detector, parser, tagger, embedder, index``."""
        v = self.manifest.get("versions", {})
        return {k: str(v.get(k, "unknown")) for k in (*MODEL_NAMES, "index")}


#: Longest side of the copy the detector and the parser see (and masks are drawn at).
WORK_SIDE = 1024


def working_copy(image: Any, side: int = WORK_SIDE) -> Any:
    """``image`` itself when its longest side is at most ``side``, else a downscaled copy."""
    from PIL import Image

    W, H = image.size
    if max(W, H) <= side:
        return image
    s = side / max(W, H)
    return image.resize((max(1, round(W * s)), max(1, round(H * s))), Image.Resampling.BILINEAR)


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a binary (H, W) mask: ``{"size": [h, w], "counts": str}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


class SearchEngine:
    """Runs photos through a :class:`Bundle`.

    ``crop_fn`` defaults to running tagger + embedder in this process; the BentoML service
    passes its batching worker instead. ``image_fn`` likewise defaults to detector + parser
    on this one photo; the service passes a :class:`bentos.batching.MicroBatcher` over
    :meth:`image_models`. ``score_min``, ``max_garments`` and ``crop_context`` come from
    ``config/serving.yaml``.
    """

    def __init__(
        self,
        bundle: Bundle,
        crop_fn: CropFn | None = None,
        score_min: float = 0.3,
        max_garments: int = 8,
        image_fn: ImageFn | None = None,
        work_side: int = WORK_SIDE,
        crop_context: float | None = None,
        exact_photo_min: float | None = None,
    ) -> None:
        from models.taxonomy import APPLICABLE, CATEGORIES

        self.bundle = bundle
        self.crop_fn: CropFn = crop_fn or self.local_crops
        self.image_fn: ImageFn = image_fn or (lambda image: self.image_models([image])[0])
        self.score_min = score_min
        self.max_garments = max_garments
        self.work_side = int(work_side)
        if crop_context is None:  # the service passes its config's; in-process callers get the same
            from bentos._io import load_config

            crop_context = float(load_config()["search"].get("crop_context", TRAIN_CONTEXT))
        if exact_photo_min is None:
            from bentos._io import load_config

            exact_photo_min = float(load_config()["search"].get("exact_photo_min", 0.0))
        self.crop_context = float(crop_context)
        self.exact_photo_min = float(exact_photo_min)
        self.categories = tuple(CATEGORIES)
        self.applicable = APPLICABLE
        # A garment's parsing class is its category's index in the parser's own classes
        # (background, skin, hair, garments ...), which the parser model carries.
        classes = list(getattr(bundle.parser, "classes", None) or ())
        self.parsing_class = {c: i for i, c in enumerate(classes) if i >= 3}
        self.crop_size = max(
            int(bundle.tagger.tailor_config["crop_size"]), int(bundle.embedder.tailor_config["crop_size"])
        )

    def image_models(self, images: list[Any]) -> list[tuple[dict[str, Any], np.ndarray]]:
        """Detector + parser on a batch of photos: ``[(detections, label map)]``."""
        dets = A.predict("detector", self.bundle.detector, images)
        labels = A.predict("parser", self.bundle.parser, images)
        return list(zip(dets, labels, strict=True))

    def local_crops(self, crops: np.ndarray) -> tuple[list[dict[str, tuple[str, float]]], np.ndarray]:
        """Tagger + embedder in this process (no cross-request batching)."""
        return A.crop_forward(self.bundle.tagger, self.bundle.embedder, crops)

    def warmup(self) -> None:
        """One tiny pass through every model so the first request does not pay for lazy init."""
        from PIL import Image

        self.search(Image.new("RGB", (64, 64), (128, 128, 128)), k=1)

    def search(self, image: Any, k: int = 10, category: str | None = None) -> dict[str, Any]:
        """Garments of ``image`` (a decoded RGB PIL image) with tags, masks and ``k`` matches."""
        a = self.analyze(image, photo_row=self.exact_photo_min > 0)
        garments, emb, photo_emb, t = a["garments"], a["embeddings"], a["photo_embedding"], a["t"]
        hits = self.bundle.index.search(emb, k, category=category)
        if photo_emb is not None:
            self._exact_photo(garments, hits, photo_emb, k, category)
        t["search"] = time.perf_counter()
        for g, matches in zip(garments, hits, strict=True):
            g["matches"] = matches
        garments.sort(key=lambda g: -g["score"])
        order = ["start", "detect_parse", "tag_embed", "search"]
        timings = {f"{b}": round((t[b] - t[a]) * 1000, 1) for a, b in zip(order, order[1:], strict=False)}
        timings["total"] = round((t["search"] - t["start"]) * 1000, 1)
        return {
            "garments": garments,
            "versions": self.bundle.versions,
            "timings_ms": timings,
            "image": a["image"],
            "fallback_whole_image": a["fallback_whole_image"],
        }

    def analyze(self, image: Any, photo_row: bool = False) -> dict[str, Any]:
        """Detect, parse, tag and embed the garments of ``image`` without searching:
        ``{"garments" (box, score, category, tags, mask), "embeddings" (N, D), "photo_embedding"
        ((1, D) whole-photo vector when ``photo_row`` and something was detected, else None),
        "image", "fallback_whole_image", "t" (perf_counter marks)}``. Garments keep the
        detector's order (the embeddings' row order)."""
        t = {"start": time.perf_counter()}
        W, H = image.size
        # The detector and the parser see at most work_side pixels a side (they resize to
        # their own few hundred anyway), and label maps and masks are drawn at that size: a
        # 12 MP photo costs one small copy instead of a full-size label map and a full-size
        # mask per garment. Boxes are reported, and crops cut, in the photo's own pixels.
        work = working_copy(image, self.work_side)
        f = W / work.size[0]
        det, labels = self.image_fn(work)
        t["detect_parse"] = time.perf_counter()
        garments = select_garments(det, work.size[0], work.size[1], self.score_min, self.max_garments)
        whole = not garments
        if whole:
            # Nothing detected: a single-garment photo is that garment (category from the tagger).
            garments = [{"box": [0.0, 0.0, float(work.size[0]), float(work.size[1])], "score": 0.0, "category": None}]
        for g in garments:
            g["work_box"] = g["box"]
            g["box"] = [min(v * f, float(W if i % 2 == 0 else H)) for i, v in enumerate(g["box"])]
        # Each garment drawn as the crop models were trained on it, from the photo's own pixels;
        # the whole-photo fallback is drawn as a shop shot (and as the index draws catalog shots).
        crops = [
            garment_crop(
                image, None if whole else g["box"], self.crop_size, TRAIN_CONTEXT if whole else self.crop_context
            )
            for g in garments
        ]
        # The catalog embeds each product shot whole, so a catalog photo sent as a query is
        # recognised by its whole-photo vector: one more crop, drawn as the index drew it.
        photo_row = photo_row and not whole
        photo_emb = None
        if photo_row:
            crops.append(garment_crop(image, None, self.crop_size, TRAIN_CONTEXT))
        tags, emb = self.crop_fn(np.stack(crops))
        if photo_row:
            tags, emb, photo_emb = tags[:-1], emb[:-1], emb[-1:]
        t["tag_embed"] = time.perf_counter()
        for g, tg in zip(garments, tags, strict=True):
            # The category is the tagger's: it sees the garment crop at its own resolution and
            # knows the whole product taxonomy (longsleeve, polo, blazer ...). The detector's
            # class only finds the garment and picks its parsing class for the mask.
            g["detector_category"] = g["category"]
            if g["category"] is None:
                g["score"] = float(tg["category"][1])
            g.update(self._tagged(tg))
            g["mask"] = encode_mask(self._mask(labels, g))  # at the working size
            del g["work_box"]
            g["box"] = [round(v, 1) for v in g["box"]]
            g["score"] = round(float(g["score"]), 4)
        return {
            "garments": garments,
            "embeddings": emb,
            "photo_embedding": photo_emb,
            "image": {"width": W, "height": H},
            "fallback_whole_image": whole,
            "t": t,
        }

    def _tagged(self, tg: dict[str, tuple[str, float]]) -> dict[str, Any]:
        """The tagger's answer for one crop: category, its probability and the tags that
        apply to that category."""
        category = tg["category"][0]
        allowed = self.applicable.get(category, ("color", "pattern"))
        return {
            "category": category,
            "category_score": round(float(tg["category"][1]), 4),
            "tags": {
                h: {"value": v, "score": round(float(p), 4)}
                for h, (v, p) in tg.items()
                if h not in _NOT_ATTRIBUTES and h in allowed
            },
        }

    def describe(self, image: Any) -> dict[str, Any]:
        """A photo of one garment (a closet photo), drawn whole as a product shot - the shop
        side of the embedder's consumer-to-shop training, as the catalog's photos are:
        ``{category, category_score, tags, embedding (D,), box: None}``.

        Measured on the demo's val street scenes (``tailor bench look``): closet photos
        embedded whole tell owned look garments from others better than the detector's
        largest box of them (balanced accuracy 0.67 vs 0.64).
        """
        crop = garment_crop(image, None, self.crop_size, TRAIN_CONTEXT)
        tags, emb = self.crop_fn(crop[None])
        return {**self._tagged(tags[0]), "embedding": emb[0], "box": None}

    def _exact_photo(
        self,
        garments: list[dict[str, Any]],
        hits: list[list[dict[str, Any]]],
        photo_emb: np.ndarray,
        k: int,
        category: str | None,
    ) -> None:
        """When the whole photo is a catalog product's own photo (cosine >= ``exact_photo_min``),
        that product leads the matches of the photo's largest garment, marked ``exact``.

        A detector box of a product shot is not the whole shot the index embedded, and in a
        catalog of thousands of similar T-shirts the product itself can miss the box's top
        5 (measured on the demo's val photos: 18 % did). A street scene never comes near the
        threshold: its whole-photo vector describes an outfit, not one shop shot.
        """
        top = self.bundle.index.search(photo_emb, 1, category=category)[0]
        if not top or top[0]["score"] < self.exact_photo_min:
            return
        exact = {**top[0], "exact": True}
        j = max(
            range(len(garments)),
            key=lambda i: (
                (garments[i]["box"][2] - garments[i]["box"][0]) * (garments[i]["box"][3] - garments[i]["box"][1])
            ),
        )
        hits[j][:] = [exact] + [m for m in hits[j] if m["product_id"] != exact["product_id"]][: k - 1]

    def _mask(self, labels: np.ndarray, g: dict[str, Any]) -> np.ndarray:
        """The garment's pixels: parser pixels of its category inside its box, else any
        garment class inside the box (a parser/detector category disagreement)."""
        x1, y1, x2, y2 = (int(round(v)) for v in g["work_box"])
        mask = np.zeros(labels.shape, dtype=np.uint8)
        region = labels[y1:y2, x1:x2]
        cls = self.parsing_class.get(g.get("detector_category") or g["category"], -1)
        sel = region == cls
        if not sel.any():
            sel = region >= 3
        mask[y1:y2, x1:x2] = sel
        return mask
