"""PNG plots written into a run directory (the MLflow layer logs them as artifacts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on workers
    import matplotlib.pyplot as plt

    return plt


def confusion_png(conf: np.ndarray, names: list[str], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix with counts."""
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 0.8 + 0.45 * n))
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if conf[i, j]:
                ax.text(
                    j,
                    i,
                    int(conf[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def pr_curves_png(precision: np.ndarray, names: list[str], path: Path) -> Path:
    """Per-class precision/recall curves at IoU 0.5 (COCO's 101 recall points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    rec = np.linspace(0, 1, precision.shape[0])
    for k, name in enumerate(names):
        p = precision[:, k]
        if (p < 0).all():
            continue  # no ground truth of this class in the split
        ax.plot(rec, np.clip(p, 0, 1), label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("detector PR curves (IoU 0.5)")
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, path)


def curves_png(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Training loss and validation metrics per epoch: each metric a solid line, its trivial
    baseline (``val_baseline_<metric>``) dashed in the same colour, the best epoch of the
    primary score marked. Counts (``val_n_*``) are left out: they share no axis with scores."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    ep = [h["epoch"] for h in history]
    for key in ("train_loss", "val_loss"):
        if any(key in h for h in history):
            a.plot(ep, [h.get(key, np.nan) for h in history], marker="o", label=key)
    a.set_xlabel("epoch")
    a.set_title("loss")
    a.legend()
    keys = sorted(
        {
            k
            for h in history
            for k, v in h.items()
            if k.startswith("val_")
            and k != "val_loss"
            and not k.startswith(("val_n_", "val_baseline_"))
            and isinstance(v, int | float)
        }
    )
    for key in keys[:10]:
        (line,) = b.plot(ep, [h.get(key, np.nan) for h in history], marker=".", label=key[4:])
        base = "val_baseline_" + key[4:]
        if any(base in h for h in history):
            b.plot(ep, [h.get(base, np.nan) for h in history], ls="--", color=line.get_color(), lw=1)
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.set_title("validation metrics (dashed: trivial baseline)")
    b.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def samples_png(images: list[np.ndarray], path: Path, title: str, cols: int = 4) -> Path:
    """A grid of already-drawn RGB uint8 images."""
    plt = _plt()
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im in zip(axes.ravel(), images, strict=False):
        ax.imshow(im)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def baselines_png(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Paired bars per metric: the model's value beside its trivial baseline (rows of
    ``pipelines.gate.baseline_table``: metric, value, baseline, kind; ``None`` = not measured)."""
    plt = _plt()
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * n + 1.5), 3.8))
    x = np.arange(n)
    val = [np.nan if r["value"] is None else r["value"] for r in rows]
    base = [np.nan if r["baseline"] is None else r["baseline"] for r in rows]
    ax.bar(x - 0.2, val, 0.4, label="model", color="#3b75af")
    ax.bar(x + 0.2, base, 0.4, label="trivial baseline", color="#bbbbbb")
    for i, (v, b) in enumerate(zip(val, base, strict=True)):
        for off, y in ((-0.2, v), (0.2, b)):
            if not np.isnan(y):
                ax.text(i + off, y + 0.01, f"{y:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"{r['metric']}\n({r['kind']})" for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def draw_boxes(img, boxes: list[tuple[list[float], str, float | None]], color=(255, 40, 40)):
    """Copy of a PIL image with ``(xyxy, label, score)`` boxes drawn; returns an RGB array."""
    from PIL import ImageDraw

    im = img.copy()
    d = ImageDraw.Draw(im)
    for box, label, score in boxes:
        d.rectangle(box, outline=color, width=2)
        d.text((box[0] + 2, box[1] + 1), label if score is None else f"{label} {score:.2f}", fill=color)
    return np.asarray(im)


def overlay_mask(
    img: np.ndarray, label: np.ndarray, palette: list[tuple[int, int, int]], alpha: float = 0.5
) -> np.ndarray:
    """Blend a label map (palette colours, 0 = transparent background) over an RGB array."""
    pal = np.asarray(palette + [(0, 0, 0)] * max(0, 256 - len(palette)), dtype=np.float32)
    col = pal[np.clip(label, 0, 255)]
    out = img.astype(np.float32)
    m = (label > 0)[..., None]
    return np.where(m, (1 - alpha) * out + alpha * col, out).astype(np.uint8)


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path
