"""Detector task: RetinaNet training data, COCO mAP evaluation, PR curves, predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from pipelines import plots as P

from . import metrics as M
from .data import (
    CANVAS_FILL,
    RowDataset,
    load_rgb,
    photometric,
    resize_long,
    square_canvas,
    to_tensor,
)
from .engine import Task


def _target(row, cats: list[str], s: float) -> tuple[list[list[float]], list[int]]:
    """A row's boxes scaled by ``s`` (xyxy) and 1-based labels; unknown categories are no target."""
    boxes, labels = [], []
    for b in _boxes_from(row["boxes"]):
        if b.get("category") not in cats:
            continue  # unknown category: not a target (and not counted as background either way)
        x, y, w, h = (float(v) * s for v in b["bbox"])
        boxes.append([x, y, x + w, y + h])
        labels.append(cats.index(b["category"]) + 1)
    return boxes, labels


def _as_target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


class DetectorDataset(RowDataset):
    """Image resized to ``image_size`` (long side) + xyxy boxes and 1-based labels."""

    def __getitem__(self, idx: int):
        i, copy = self.items[idx]
        row = self.df.iloc[i]
        img, s = resize_long(load_rgb(row["image"]), int(self.cfg["image_size"]))
        boxes, labels = _target(row, self.cfg["categories"], s)
        level = self.aug_level(copy)
        if level:
            rng = self.rng(idx)
            img = photometric(img, rng, level)
            if rng.random() < 0.5:  # horizontal flip keeps every garment category valid
                img = ImageOps.mirror(img)
                boxes = [[img.width - b[2], b[1], img.width - b[0], b[3]] for b in boxes]
        return to_tensor(img), _as_target(boxes, labels), i, s


class CachedScenes(RowDataset):
    """Rows as cached frozen-trunk block outputs of their ``image_size`` canvas
    (:func:`~pipelines.train.features.scene_features`) + targets on that canvas. Training
    draws the mirrored canvas for half the items (boxes mirrored with it)."""

    in_memory = True  # the engine loads it without worker processes

    def __init__(self, df, train: bool, seed: int, cfg: dict[str, Any], progress: bool = False) -> None:
        from .features import scene_features

        super().__init__(df, train, seed, cfg)
        self.size = int(cfg["image_size"])
        self.maps = scene_features(
            list(map(str, self.df["image"])),
            self.size,
            CANVAS_FILL,
            flips=train,
            workers=int(cfg.get("workers") or 0),
            progress=progress,
        )
        cats = cfg["categories"]
        self.scales = [
            self.size / max(int(w), int(h)) if w == w and h == h else None
            for w, h in zip(
                self.df.get("width", [float("nan")] * len(self.df)),
                self.df.get("height", [float("nan")] * len(self.df)),
                strict=True,
            )
        ]
        self.targets = []
        for i in range(len(self.df)):
            if self.scales[i] is None:  # no recorded size: read it from the file
                with Image.open(self.df["image"].iloc[i]) as im:
                    self.scales[i] = self.size / max(im.size)
            self.targets.append(_target(self.df.iloc[i], cats, self.scales[i]))

    def __getitem__(self, idx: int):
        i, _ = self.items[idx]
        boxes, labels = self.targets[i]
        mirrored = self.train and self.rng(idx).random() < 0.5
        if mirrored:
            boxes = [[self.size - b[2], b[1], self.size - b[0], b[3]] for b in boxes]
        maps = {b: m[i] for b, m in self.maps[mirrored].items()}
        return maps, _as_target(boxes, labels), i, self.scales[i]


def _stack_maps(items) -> dict[int, torch.Tensor]:
    return {b: torch.stack([m[b] for m in items]).float() for b in items[0]}


class DetectorTask(Task):
    name = "detector"
    primary = "map_50"
    fallback = ("top_category_acc_real",)

    def prepare(self, cfg, frame):
        from models.taxonomy import CATEGORIES

        seen = {b["category"] for v in frame["boxes"] for b in _boxes_from(v) if b.get("category")}
        cfg["categories"] = list(CATEGORIES) + sorted(seen - set(CATEGORIES))
        return cfg

    def dataset(self, df, train, cfg):
        from .features import scene_cache_enabled

        if scene_cache_enabled(cfg):
            return CachedScenes(df, train, int(cfg["seed"]), cfg, progress=bool(cfg.get("progress", False)))
        return DetectorDataset(df, train, int(cfg["seed"]), cfg)

    def collate(self, batch):
        return tuple(zip(*batch, strict=True))

    def _forward(self, model, inputs, targets=None):
        """``model(images[, targets])``, or the same from cached trunk features: RetinaNet
        then sees blank canvases of the right size (for its anchors) while its backbone
        replays the cached maps."""
        extra = () if targets is None else (targets,)
        if not isinstance(inputs[0], dict):
            return model(list(inputs), *extra)
        size = int(model.tailor_config["image_size"])
        blank = torch.zeros(1, 1, 1).expand(3, size, size)
        with model.backbone.replay(_stack_maps(inputs)):
            return model([blank] * len(inputs), *extra)

    def step(self, model, batch, cfg):
        inputs, targets, _, _ = batch
        losses = self._forward(model, inputs, list(targets))
        return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def _run(self, model, df, cfg):
        """Detections per row in original pixel coordinates: [(xywh, score, label)]."""
        model.eval()
        ds = self.dataset(df, False, cfg)
        out: list[list[tuple[list[float], float, int]]] = [[] for _ in range(len(df))]
        loader = torch.utils.data.DataLoader(ds, batch_size=16, collate_fn=self.collate, num_workers=0)
        for inputs, _, idx, scales in loader:
            for det, i, s in zip(self._forward(model, inputs), idx, scales, strict=True):
                for b, sc, lab in zip(
                    det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
                ):
                    out[i].append(([b[0] / s, b[1] / s, (b[2] - b[0]) / s, (b[3] - b[1]) / s], sc, lab))
        return out

    def evaluate(self, model, df, cfg, out_dir):
        from pipelines.ingest.photos import MAIN_LABELS

        df = self.eval_rows(df, cfg)
        cats = cfg["categories"]
        dets = self._run(model, df, cfg)
        gts = [
            [(b["bbox"], cats.index(b["category"]) + 1) for b in _boxes_from(v) if b.get("category") in cats]
            for v in df["boxes"]
        ]
        is_real = (df["source"] == "photos").to_numpy() if "source" in df else np.zeros(len(df), bool)
        metrics: dict[str, float] = {}
        plots: list[Path] = []
        syn = np.flatnonzero(~is_real)
        if len(syn):
            m, prec = M.coco_detection([gts[i] for i in syn], [dets[i] for i in syn], len(cats))
            metrics.update(m)
            metrics.update(empty_detector_baseline([gts[i] for i in syn], len(cats)))
            if out_dir is not None and prec is not None:
                plots.append(P.pr_curves_png(prec, cats, Path(out_dir) / "detector_pr_curves.png"))
        real = np.flatnonzero(is_real)
        if len(real):
            lab = df["label"].to_numpy() if "label" in df else np.array([None] * len(df))
            main = [i for i in real if lab[i] in MAIN_LABELS]
            hits, ious = [], []
            for i in main:
                top = max(dets[i], key=lambda d: d[1], default=None)
                hits.append(top is not None and bool(gts[i]) and top[2] == gts[i][0][1])
                ious.append(_iou(top[0], gts[i][0][0]) if top is not None and gts[i] else 0.0)
            if main:
                metrics["top_category_acc_real"] = float(np.mean(hits))
                metrics["top_box_iou_real"] = float(np.mean(ious))
                # an empty detector scores 0 here; one that always names the majority category
                # scores its share, the harder baseline for a category accuracy
                metrics["baseline_top_category_acc_real"] = majority_top_category([gts[i] for i in main])
        if out_dir is not None and len(df):
            pick = list(syn[:6]) + list(real[:2])
            drawn = []
            for i in pick:
                img = load_rgb(df["image"][i])
                boxes = [([b[0], b[1], b[0] + b[2], b[1] + b[3]], cats[c - 1], s) for b, s, c in dets[i] if s >= 0.3]
                drawn.append(P.draw_boxes(img, boxes))
            plots.append(
                P.samples_png(drawn, Path(out_dir) / "detector_samples.png", "detector predictions (score >= 0.3)")
            )
        return metrics, plots

    @torch.no_grad()
    def predict(self, model, images, batch_size: int = 8):
        """Detections per image, batch-invariant: every image is drawn on the same
        ``image_size`` square canvas (``square_canvas``), so one image gives the same boxes
        whether it runs alone (a catalog image being indexed) or batched with others (a
        query under load), and a batch needs no padding inside the model."""
        model.eval()
        cfg = model.tailor_config
        cats = cfg["categories"]
        thresh = float(cfg.get("predict_score_thresh", 0.3))
        size = int(cfg["image_size"])
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [square_canvas(img.convert("RGB"), size, CANVAS_FILL) for img in images[start : start + batch_size]]
            dets = model([to_tensor(c) for c, _ in chunk])
            for det, (_, (s, _, _)) in zip(dets, chunk, strict=True):
                keep = det["scores"] >= thresh
                out.append(
                    {
                        "boxes": (det["boxes"][keep] / s).tolist(),
                        "scores": det["scores"][keep].tolist(),
                        "categories": [cats[int(c) - 1] for c in det["labels"][keep]],
                    }
                )
        return out

    def input_example(self, cfg):
        s = int(cfg.get("image_size", 256))
        return np.random.default_rng(0).random((1, 3, s * 3 // 4, s), dtype=np.float32)


def empty_detector_baseline(gts: list[list[tuple[list[float], int]]], n_classes: int) -> dict[str, float]:
    """``baseline_map_50`` / ``baseline_map_50_95``: the empty detector (no boxes at all)
    scored by the same COCO evaluation on the same ground truth (0 whenever there is any)."""
    m, _ = M.coco_detection(gts, [[] for _ in gts], n_classes)
    return {f"baseline_{k}": v for k, v in m.items()}


def majority_top_category(gts: list[list[tuple[list[float], int]]]) -> float:
    """Top-category accuracy of a detector whose top box always has the most frequent
    first ground-truth category (rows without ground truth are misses, as for the model)."""
    first = [g[0][1] for g in gts if g]
    if not gts:
        return float("nan")
    return max(first.count(c) for c in set(first)) / len(gts) if first else 0.0


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _boxes_from(value: Any) -> list[dict[str, Any]]:
    return json.loads(value) if isinstance(value, str) else list(value or [])
