"""Evaluation metrics as small pure functions (each tested: perfect predictions -> 1.0)."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np


def confusion(true: np.ndarray, pred: np.ndarray, n: int, ignore: int | None = 255) -> np.ndarray:
    """(n, n) confusion counts, rows = truth; pixels/samples labelled ``ignore`` are skipped."""
    true = np.asarray(true).ravel()
    pred = np.asarray(pred).ravel()
    keep = (true != ignore) if ignore is not None else np.ones_like(true, bool)
    keep &= (true >= 0) & (true < n)
    return np.bincount(true[keep] * n + pred[keep], minlength=n * n).reshape(n, n)


def segmentation_scores(conf: np.ndarray) -> dict[str, float]:
    """mIoU over classes present in truth or prediction, and pixel accuracy."""
    tp = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    iou = tp[present] / union[present]
    return {"miou": float(iou.mean()) if iou.size else 0.0, "pixel_acc": float(tp.sum() / max(conf.sum(), 1))}


def classification_scores(true: np.ndarray, pred: np.ndarray, n: int) -> dict[str, float]:
    """Accuracy and macro-F1 (torchmetrics, over the classes seen in truth or prediction)."""
    import torch
    from torchmetrics.functional.classification import multiclass_f1_score

    true = np.asarray(true, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if true.size == 0:
        return {"acc": float("nan"), "f1": float("nan")}
    acc = float((true == pred).mean())
    # classes absent from both truth and prediction would count as F1 = 0 in a plain macro
    # average over the vocabulary; restrict to the classes that occur (sklearn's behaviour)
    seen = np.union1d(np.unique(true), np.unique(pred))
    remap = {c: i for i, c in enumerate(seen)}
    t = torch.tensor([remap[c] for c in true])
    p = torch.tensor([remap[c] for c in pred])
    f1 = float(multiclass_f1_score(p, t, num_classes=len(seen), average="macro")) if len(seen) > 1 else acc
    return {"acc": acc, "f1": f1}


#: similarities closer than this are ties (float32 cosines of equal vectors can differ by an
#: ulp between BLAS kernel paths)
TIE_TOL = 1e-6


def _topk_ties(sims: np.ndarray, rel: np.ndarray, k: int):
    """Per row of ``sims``: (relevant items certainly in the top ``k``, tie slots left in
    the top ``k``, items tied at the k-th value, relevant items among them)."""
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1 : k]
    above = sims > kth + TIE_TOL
    tied = np.abs(sims - kth) <= TIE_TOL
    return (rel & above).sum(1), k - above.sum(1), tied.sum(1), (rel & tied).sum(1)


def recall_at_k(
    q: np.ndarray, q_ids: list[Any], g: np.ndarray, g_ids: list[Any], ks: tuple[int, ...] = (1, 5, 20)
) -> dict[int, float]:
    """Share of queries whose identity is among the k nearest gallery items (cosine).

    Items tied at the k-th similarity are scored by their expectation over a random order
    of the tie, not by their index: a constant embedder scores the random-ranking baseline
    (:func:`random_recall_at_k`) exactly, instead of whatever the gallery order gives it.
    """
    from math import comb

    if len(q) == 0 or len(g) == 0:
        return {k: float("nan") for k in ks}
    sims = np.asarray(q @ g.T, dtype=np.float64)
    rel = np.asarray(g_ids, dtype=object)[None, :] == np.asarray(q_ids, dtype=object)[:, None]
    out = {}
    for k in ks:
        rel_above, slots, n_tied, rel_tied = _topk_ties(sims, rel, min(k, sims.shape[1]))
        hit = [
            1.0 if ra else 1.0 - comb(int(n - r), int(s)) / comb(int(n), int(s)) if r else 0.0
            for ra, s, n, r in zip(rel_above, slots, n_tied, rel_tied, strict=True)
        ]
        out[k] = float(np.mean(hit))
    return out


def precision_at_k(x: np.ndarray, labels: list[Any], k: int = 5, query_mask: np.ndarray | None = None) -> float:
    """Leave-one-out same-label precision@k among ``x`` (rows L2-normalised); ties at the
    k-th similarity count by expectation, as in :func:`recall_at_k`."""
    n = len(x)
    if n < 2:
        return float("nan")
    sims = np.asarray(x @ x.T, dtype=np.float64)
    np.fill_diagonal(sims, -np.inf)
    lab = np.asarray(labels, dtype=object)
    kk = min(k, n - 1)
    rel = lab[None, :] == lab[:, None]
    np.fill_diagonal(rel, False)
    rel_above, slots, n_tied, rel_tied = _topk_ties(sims, rel, kk)
    prec = (rel_above + slots * rel_tied / n_tied) / kk
    if query_mask is not None:
        prec = prec[np.asarray(query_mask, bool)]
    return float(prec.mean()) if prec.size else float("nan")


def coco_detection(
    gts: list[list[tuple[list[float], int]]], dets: list[list[tuple[list[float], float, int]]], n_classes: int
) -> tuple[dict[str, float], np.ndarray | None]:
    """COCO evaluation (pycocotools) of per-image ground truth ``[(xywh, class)]`` and
    detections ``[(xywh, score, class)]``; classes are 1-based.

    Returns ``({"map_50", "map_50_95"}, precision[R, K])`` — the PR curves at IoU 0.5 per
    class (101 recall points; -1 where a class has no ground truth).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (g, d) in enumerate(zip(gts, dets, strict=True), start=1):
        images.append({"id": i, "width": 1, "height": 1})
        for box, c in g:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "bbox": list(box),
                    "category_id": int(c),
                    "area": float(box[2] * box[3]),
                    "iscrowd": 0,
                }
            )
        for box, s, c in d:
            results.append({"image_id": i, "bbox": list(box), "score": float(s), "category_id": int(c)})
    if not anns:
        return {"map_50": float("nan"), "map_50_95": float("nan")}, None
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, n_classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        gt.createIndex()
        if not results:
            return {"map_50": 0.0, "map_50_95": 0.0}, None
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][0, :, :, 0, 2]  # IoU=.5, all recalls, all classes, area all, 100 dets
    return {"map_50": float(max(ev.stats[1], 0.0)), "map_50_95": float(max(ev.stats[0], 0.0))}, prec


# --------------------------------------------------------------------------- trivial baselines
# Each gated metric is reported beside what a model that learned nothing scores on the same
# evaluation set; the promotion gate rejects a candidate that does not beat it clearly.
def majority_accuracy(true: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class of ``true`` (its share)."""
    true = np.asarray(true)
    if true.size == 0:
        return float("nan")
    return float(np.bincount(true.astype(np.int64) - true.min()).max() / true.size)


def group_weights(groups: Any) -> np.ndarray:
    """Per-row weights under which every group (a product) counts once: 1 / its row count.
    A row without a group (None/NaN/"") is a group of its own."""
    keys = [g if isinstance(g, str) and g else f"#row{i}" for i, g in enumerate(groups)]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.array([1.0 / counts[k] for k in keys])
    return w / max(len(counts), 1)


def weighted_accuracy(true: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> float:
    """Accuracy with row ``weights`` summing to 1 (:func:`group_weights`: per product)."""
    true, pred = np.asarray(true), np.asarray(pred)
    return float(np.sum(weights * (true == pred)) / max(np.sum(weights), 1e-12)) if true.size else float("nan")


def weighted_majority_accuracy(true: np.ndarray, weights: np.ndarray) -> float:
    """Best weighted accuracy of a constant prediction (the majority class under ``weights``)."""
    true = np.asarray(true, dtype=np.int64)
    if true.size == 0:
        return float("nan")
    per_class = np.bincount(true - true.min(), weights=weights)
    return float(per_class.max() / max(np.sum(weights), 1e-12))


def random_recall_at_k(q_ids: list[Any], g_ids: list[Any], k: int) -> float:
    """Expected Recall@k of a random ranking of the gallery: a query with r relevant items
    among G is hit with probability 1 - C(G-r, k) / C(G, k)."""
    from math import comb

    g = list(g_ids)
    n = len(g)
    if not len(q_ids) or not n:
        return float("nan")
    counts: dict[Any, int] = {}
    for i in g:
        counts[i] = counts.get(i, 0) + 1
    kk = min(k, n)
    return float(np.mean([1.0 - comb(n - counts.get(q, 0), kk) / comb(n, kk) for q in q_ids]))


def random_precision_at_k(labels: list[Any], query_mask: np.ndarray | None = None) -> float:
    """Expected leave-one-out same-label precision@k of a random ranking: for each query,
    the share of the other items that share its label (independent of k)."""
    lab = np.asarray(labels, dtype=object)
    n = len(lab)
    if n < 2:
        return float("nan")
    _, inv, counts = np.unique(lab.astype(str), return_inverse=True, return_counts=True)
    per = (counts[inv] - 1) / (n - 1)
    if query_mask is not None:
        per = per[np.asarray(query_mask, bool)]
    return float(per.mean()) if per.size else float("nan")
