"""Detector task: RetinaNet training data, COCO mAP evaluation, PR curves, predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import ImageOps

from models._common import MEAN

from . import metrics as M
from . import plots as P
from .data import RowDataset, load_rgb, photometric, resize_long, square_canvas, to_tensor
from .engine import Task

#: Canvas fill for inference: the model's normalisation mean, i.e. 0 after normalising, the
#: value the model's own batching pads with and the one its convolutions pad with at borders.
CANVAS_FILL = tuple(round(255 * m) for m in MEAN)


class DetectorDataset(RowDataset):
    """Image resized to ``image_size`` (long side) + xyxy boxes and 1-based labels."""

    def __getitem__(self, idx: int):
        i, copy = self.items[idx]
        row = self.df.iloc[i]
        img, s = resize_long(load_rgb(row["image"]), int(self.cfg["image_size"]))
        cats = self.cfg["categories"]
        boxes, labels = [], []
        for b in _boxes_from(row["boxes"]):
            if b.get("category") not in cats:
                continue  # unknown category: not a target (and not counted as background either way)
            x, y, w, h = (float(v) * s for v in b["bbox"])
            boxes.append([x, y, x + w, y + h])
            labels.append(cats.index(b["category"]) + 1)
        level = self.aug_level(copy)
        if level:
            rng = self.rng(idx)
            img = photometric(img, rng, level)
            if rng.random() < 0.5:  # horizontal flip keeps every garment category valid
                img = ImageOps.mirror(img)
                boxes = [[img.width - b[2], b[1], img.width - b[0], b[3]] for b in boxes]
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.tensor(labels, dtype=torch.int64)}
        return to_tensor(img), target, i, s


class DetectorTask(Task):
    name = "detector"
    primary = "map_50"
    fallback = ("top_category_acc_real",)

    def prepare(self, cfg, frame):
        from models.taxonomy import CATEGORIES

        seen = {b["category"] for v in frame["boxes"] for b in _boxes_from(v)
                if b.get("category")}
        cfg["categories"] = list(CATEGORIES) + sorted(seen - set(CATEGORIES))
        return cfg

    def dataset(self, df, train, cfg):
        return DetectorDataset(df, train, int(cfg["seed"]), cfg)

    def collate(self, batch):
        return tuple(zip(*batch, strict=True))

    def step(self, model, batch, cfg):
        images, targets, _, _ = batch
        losses = model(list(images), list(targets))
        return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def _run(self, model, df, cfg):
        """Detections per row in original pixel coordinates: [(xywh, score, label)]."""
        model.eval()
        ds = DetectorDataset(df, False, 0, cfg)
        out: list[list[tuple[list[float], float, int]]] = [[] for _ in range(len(df))]
        loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=self.collate, num_workers=0)
        for images, _, idx, scales in loader:
            for det, i, s in zip(model(list(images)), idx, scales, strict=True):
                for b, sc, lab in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True):
                    out[i].append(([b[0] / s, b[1] / s, (b[2] - b[0]) / s, (b[3] - b[1]) / s], sc, lab))
        return out

    def evaluate(self, model, df, cfg, out_dir):
        from pipelines.ingest.photos import MAIN_LABELS

        df = self.eval_rows(df, cfg)
        cats = cfg["categories"]
        dets = self._run(model, df, cfg)
        gts = [[(b["bbox"], cats.index(b["category"]) + 1) for b in _boxes_from(v) if b.get("category") in cats]
               for v in df["boxes"]]
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
            plots.append(P.samples_png(drawn, Path(out_dir) / "detector_samples.png", "detector predictions (score >= 0.3)"))
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
            chunk = [square_canvas(img.convert("RGB"), size, CANVAS_FILL) for img in images[start:start + batch_size]]
            dets = model([to_tensor(c) for c, _ in chunk])
            for det, (_, (s, _, _)) in zip(dets, chunk, strict=True):
                keep = det["scores"] >= thresh
                out.append({"boxes": (det["boxes"][keep] / s).tolist(), "scores": det["scores"][keep].tolist(),
                            "categories": [cats[int(c) - 1] for c in det["labels"][keep]]})
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
