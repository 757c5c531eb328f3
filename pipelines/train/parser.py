"""Parser task: letterboxed images + label maps, pixel cross-entropy, mIoU / pixel accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from pipelines import plots as P

from . import metrics as M
from .data import CANVAS_FILL, RowDataset, load_rgb, photometric, square_canvas, to_tensor
from .engine import Task

PAD = 255  # label of letterbox padding: ignored by the loss and the metrics


def letterbox(img: Image.Image, label: np.ndarray | None, size: int):
    """Fit into ``size`` x ``size`` keeping aspect; returns (image, label, (scale, w, h))."""
    canvas, (s, w, h) = square_canvas(img, size, CANVAS_FILL)
    return canvas, None if label is None else _label_canvas(label, size, w, h), (s, w, h)


def _label_canvas(label: np.ndarray, size: int, w: int, h: int) -> np.ndarray:
    """``label`` resized (nearest) to ``w`` x ``h`` at the top left of a ``size`` square of PAD."""
    lab = np.full((size, size), PAD, np.uint8)
    lab[:h, :w] = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
    return lab


def load_label(path: str) -> np.ndarray:
    """Palette PNG -> class indices (H, W) uint8."""
    with Image.open(path) as im:
        return np.asarray(im if im.mode in ("P", "L") else im.convert("L"), dtype=np.uint8)


class ParserDataset(RowDataset):
    def __getitem__(self, idx: int):
        i, copy = self.items[idx]
        row = self.df.iloc[i]
        img, lab, _ = letterbox(load_rgb(row["image"]), load_label(row["label_png"]), int(self.cfg["image_size"]))
        level = self.aug_level(copy)
        if level:
            rng = self.rng(idx)
            img = photometric(img, rng, level)
            if rng.random() < 0.5:  # flip image and labels (no left/right classes)
                img = ImageOps.mirror(img)
                lab = lab[:, ::-1].copy()
        return to_tensor(img), torch.from_numpy(lab.astype(np.int64))


class CachedParserRows(RowDataset):
    """Rows as cached frozen-trunk block outputs of their letterboxed canvas
    (:func:`~pipelines.train.features.scene_features`, shared with the detector) + label
    maps; training draws the mirrored canvas and labels for half the items."""

    in_memory = True  # the engine loads it without worker processes

    def __init__(self, df, train: bool, seed: int, cfg, progress: bool = False) -> None:
        from .features import scene_features

        super().__init__(df, train, seed, cfg)
        size = int(cfg["image_size"])
        self.maps = scene_features(
            list(map(str, self.df["image"])),
            size,
            CANVAS_FILL,
            flips=train,
            workers=int(cfg.get("workers") or 0),
            progress=progress,
        )
        self.labels = []
        for path in self.df["label_png"]:
            label = load_label(path)  # the label map has its image's size: the same letterbox
            s = size / max(label.shape)
            self.labels.append(
                _label_canvas(label, size, max(1, round(label.shape[1] * s)), max(1, round(label.shape[0] * s)))
            )

    def __getitem__(self, idx: int):
        i, _ = self.items[idx]
        mirrored = self.train and self.rng(idx).random() < 0.5
        lab = self.labels[i][:, ::-1] if mirrored else self.labels[i]
        return {b: m[i] for b, m in self.maps[mirrored].items()}, torch.from_numpy(lab.astype(np.int64))


def _logits(model, x) -> torch.Tensor:
    """Logits of a batch of images, or of cached trunk maps (a dict of batched blocks)."""
    if isinstance(x, dict):
        return model.from_cached({b: m.float() for b, m in x.items()})
    return model(x)


class ParserTask(Task):
    name = "parser"
    primary = "miou"

    def prepare(self, cfg, frame):
        from models.taxonomy import PARSING_CLASSES

        cfg.setdefault("classes", list(PARSING_CLASSES))
        cfg["image_size"] = int(cfg.get("image_size", 160)) // 8 * 8  # PSPNet needs multiples of 8
        return cfg

    def dataset(self, df, train, cfg):
        from .features import scene_cache_enabled

        if scene_cache_enabled(cfg, "encoder"):
            return CachedParserRows(df, train, int(cfg["seed"]), cfg, progress=bool(cfg.get("progress", False)))
        return ParserDataset(df, train, int(cfg["seed"]), cfg)

    def step(self, model, batch, cfg):
        x, y = batch
        loss = F.cross_entropy(_logits(model, x), y, ignore_index=PAD)
        return loss, {}

    @torch.no_grad()
    def evaluate(self, model, df, cfg, out_dir):
        from pipelines.synth.taxonomy import PARSING_PALETTE

        model.eval()
        df = self.eval_rows(df, cfg)
        n = len(cfg["classes"])
        conf = np.zeros((n, n), np.int64)
        # the all-background parser, scored on the same label maps by the same code path
        bg = list(cfg["classes"]).index("background") if "background" in cfg["classes"] else 0
        conf_bg = np.zeros((n, n), np.int64)
        samples = []
        ds = self.dataset(df, False, cfg)
        for k, (x, y) in enumerate(torch.utils.data.DataLoader(ds, batch_size=16, num_workers=0)):
            pred = _logits(model, x).argmax(1).numpy()
            conf += M.confusion(y.numpy(), pred, n, ignore=PAD)
            conf_bg += M.confusion(y.numpy(), np.full_like(pred, bg), n, ignore=PAD)
            if out_dir is not None and k == 0:
                for j in range(min(6, len(x))):
                    if isinstance(x, dict):  # cached features: draw the canvas they came from
                        im = np.asarray(letterbox(load_rgb(df["image"][j]), None, int(cfg["image_size"]))[0])
                    else:
                        im = (x[j].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                    samples.append(
                        np.concatenate(
                            [
                                P.overlay_mask(
                                    im, np.where(y[j].numpy() == PAD, 0, y[j].numpy()), list(PARSING_PALETTE)
                                ),
                                P.overlay_mask(im, pred[j], list(PARSING_PALETTE)),
                            ],
                            axis=1,
                        )
                    )
        metrics = M.segmentation_scores(conf)
        metrics.update({f"baseline_{k}": v for k, v in M.segmentation_scores(conf_bg).items()})
        plots = []
        if out_dir is not None:
            plots.append(
                P.samples_png(samples, Path(out_dir) / "parser_samples.png", "parser: truth | prediction", cols=2)
            )
            plots.append(
                P.confusion_png(conf, cfg["classes"], "parser pixel confusion", Path(out_dir) / "parser_confusion.png")
            )
        return metrics, plots

    @torch.no_grad()
    def predict(self, model, images, batch_size: int = 8):
        """A (H, W) uint8 label map per image, at the image's own size. Images are letterboxed
        to one square size, so they batch without changing any image's result."""
        model.eval()
        size = int(model.tailor_config["image_size"])
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [img.convert("RGB") for img in images[start : start + batch_size]]
            boxed = [letterbox(img, None, size) for img in chunk]
            logits = model(torch.stack([to_tensor(b) for b, _, _ in boxed]))
            for img, lg, (_, _, (_, w, h)) in zip(chunk, logits, boxed, strict=True):
                lg = F.interpolate(
                    lg[None, :, :h, :w], size=(img.height, img.width), mode="bilinear", align_corners=False
                )
                out.append(lg.argmax(1)[0].numpy().astype(np.uint8))
        return out

    def input_example(self, cfg):
        s = int(cfg.get("image_size", 160))
        return np.random.default_rng(0).random((1, 3, s, s), dtype=np.float32)
