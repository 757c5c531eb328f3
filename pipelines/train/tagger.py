"""Tagger task: garment crops, masked multi-head cross-entropy, per-head accuracy / macro-F1.

Heads: the product taxonomy's ``category`` and its attributes (:mod:`models.taxonomy`).
Synthetic crops know every applicable attribute; real photos know their category and the
attributes it implies (a longsleeve has long sleeves); unknown labels are masked. With a
frozen prefix (``freeze_blocks``) the crops' prefix features come from the shared cache
(:mod:`pipelines.train.features`), so an epoch costs only the trained tail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import ImageOps

from pipelines import plots as P

from . import metrics as M
from .data import RowDataset, load_crop, parse_bbox, photometric, square_crop, to_tensor
from .engine import Task


def _known(v) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and not pd.isna(v)


class CropDataset(RowDataset):
    """A square crop around ``bbox``; augmentation = shift/scale jitter, flip, photometric."""

    def crop(self, idx: int):
        i, copy = self.items[idx]
        row = self.df.iloc[i]
        level = self.aug_level(copy)
        size = int(self.cfg["crop_size"])
        if not level:
            return i, to_tensor(load_crop(row["image"], parse_bbox(row.get("bbox")), size))
        rng = self.rng(idx)
        jitter = (
            rng.uniform(-0.06, 0.06) * level,
            rng.uniform(-0.06, 0.06) * level,
            1.0 + rng.uniform(-0.12, 0.12) * level,
        )
        img = load_crop(row["image"], parse_bbox(row.get("bbox")), size * 2)  # room for the jitter
        img = square_crop(img, None, size, context=0.0, jitter=jitter)
        img = photometric(img, rng, level)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        return i, to_tensor(img)


class TaggerDataset(CropDataset):
    def __init__(self, df, train, seed, cfg):
        super().__init__(df, train, seed, cfg)
        heads = cfg["heads"]
        # targets precomputed once: index in the head's vocabulary, -1 = unknown (masked)
        self.targets = {
            h: np.array(
                [
                    vocab.index(v) if _known(v) and v in vocab else -1
                    for v in (self.df[h] if h in self.df else [None] * len(self.df))
                ],
                np.int64,
            )
            for h, vocab in heads.items()
        }

    def target(self, i: int) -> dict[str, int]:
        return {h: int(t[i]) for h, t in self.targets.items()}

    def __getitem__(self, idx: int):
        i, x = self.crop(idx)
        return x, self.target(i)


class CropTask(Task):
    """What the tagger and the embedder share: crop datasets, optionally over cached prefix features."""

    dataset_cls: type = CropDataset

    def bind(self, model) -> None:
        self.model = model

    def cached(self, cfg) -> bool:
        from .features import cache_enabled

        return cache_enabled(cfg)

    def dataset(self, df, train, cfg):
        ds = self.dataset_cls(df, train, int(cfg["seed"]), cfg)
        if not self.cached(cfg):
            return ds
        from .features import FeatureRows, prefix_features

        return FeatureRows(ds, prefix_features(self.model, ds.df, cfg, progress=bool(cfg.get("progress", True))))

    def loader(self, ds, cfg, train, epoch):
        if self.cached(cfg):  # features are in memory: worker processes would only add copies
            cfg = {**cfg, "workers": 0}
        return super().loader(ds, cfg, train, epoch)

    def forward(self, model, x, cfg):
        """The model on a batch: crops, or cached prefix features when caching is on."""
        return model.from_prefix(x) if self.cached(cfg) else model(x)

    def warm(self, model, df, cfg) -> None:
        """Cache the held-out crops' frozen features (the tagger and the embedder share them):
        computed once here, in the sequential train tasks, instead of by both evaluation
        tasks at once on the same cores."""
        if self.cached(cfg) and len(df):
            self.bind(model)
            self.dataset(self.eval_rows(df, cfg), False, cfg)

    @torch.no_grad()
    def outputs(self, model, df, cfg):
        """``(outputs in row order, dataset)`` for evaluation (eval mode, no augmentation)."""
        model.eval()
        self.bind(model)
        ds = self.dataset(df, False, cfg)
        outs = [self.forward(model, x, cfg) for x, _ in torch.utils.data.DataLoader(ds, batch_size=64, num_workers=0)]
        return outs, ds


class TaggerTask(CropTask):
    name = "tagger"
    # early stopping and the primary figure: the two gated numbers together (the worst
    # synthetic head and real-photo category), so neither is traded for the other
    primary = "acc_gate"
    fallback = ("acc_category_real", "acc_mean")
    dataset_cls = TaggerDataset

    def prepare(self, cfg, frame):
        from models.taxonomy import ATTRIBUTES, CATEGORIES

        cfg["heads"] = {"category": list(CATEGORIES), **{a: list(v) for a, v in ATTRIBUTES.items()}}
        return cfg

    def step(self, model, batch, cfg):
        from models.tagger import masked_cross_entropy

        x, y = batch
        return masked_cross_entropy(self.forward(model, x, cfg), y)

    def logits(self, model, df, cfg):
        outs, ds = self.outputs(model, df, cfg)
        heads = list(cfg["heads"])
        logits = {
            h: np.concatenate([o[h].numpy() for o in outs]) if outs else np.zeros((0, len(cfg["heads"][h])))
            for h in heads
        }
        base = ds.base if hasattr(ds, "base") else ds
        return logits, base.targets

    def evaluate(self, model, df, cfg, out_dir):
        """Per-head accuracy / macro-F1 on synthetic crops (``acc_min`` = worst head), category
        accuracy on real photos of the 10 main labels, each beside its majority-class baseline.

        Head accuracies weight each product equally (its crops share its labels); the
        per-crop figures are ``acc_<head>_crops``."""
        from models.taxonomy import MAIN_CATEGORIES

        df = self.eval_rows(df, cfg)
        metrics: dict[str, float] = {}
        plots: list[Path] = []
        if not len(df):
            return metrics, plots
        logits, targets = self.logits(model, df, cfg)
        is_real = (df["source"] == "photos").to_numpy() if "source" in df else np.zeros(len(df), bool)
        heads = cfg["heads"]
        accs, base_accs = [], []
        ident = df["identity"].to_numpy() if "identity" in df else np.array([None] * len(df))
        for h, vocab in heads.items():
            sel = (~is_real) & (targets[h] >= 0)
            if not sel.any():
                continue
            pred = logits[h].argmax(1)
            s = M.classification_scores(targets[h][sel], pred[sel], len(vocab))
            # Each product counts once: a product worn in many street scenes has a hundred
            # crops, and per crop a few such products would make the figure (and the gate)
            # about them. acc_<h>_crops keeps the per-crop figure beside it.
            w = M.group_weights(ident[sel])
            metrics[f"acc_{h}"] = M.weighted_accuracy(targets[h][sel], pred[sel], w)
            metrics[f"acc_{h}_crops"], metrics[f"f1_{h}"] = s["acc"], s["f1"]
            metrics[f"baseline_acc_{h}"] = M.weighted_majority_accuracy(targets[h][sel], w)
            metrics[f"baseline_acc_{h}_crops"] = M.majority_accuracy(targets[h][sel])
            metrics[f"n_products_{h}"] = float(len({i for i in ident[sel] if isinstance(i, str) and i}))
            accs.append(metrics[f"acc_{h}"])
            base_accs.append(metrics[f"baseline_acc_{h}"])
            if out_dir is not None:
                conf = M.confusion(targets[h][sel], pred[sel], len(vocab), ignore=None)
                plots.append(
                    P.confusion_png(conf, vocab, f"tagger {h} (synthetic)", Path(out_dir) / f"tagger_confusion_{h}.png")
                )
        if accs:
            metrics["acc_min"], metrics["acc_mean"] = float(min(accs)), float(np.mean(accs))
            # a constant predictor scores each head's majority share; its worst head is this
            metrics["baseline_acc_min"] = float(min(base_accs))
            metrics["baseline_acc_mean"] = float(np.mean(base_accs))
            # acc_min is compared with the worst head's majority share, which can hide a head
            # stuck on its own majority: this is each head's margin over its own baseline
            metrics["acc_lift_min"] = float(min(a - b for a, b in zip(accs, base_accs, strict=True)))
        vocab = heads["category"]
        main = np.array([vocab.index(c) for c in MAIN_CATEGORIES])
        t = targets["category"]
        sel = is_real & np.isin(t, main)
        if sel.any():
            # "category accuracy over the 10 main labels": a 10-way choice among them ...
            pred10 = main[logits["category"][:, main].argmax(1)]
            metrics["acc_category_real"] = float((pred10[sel] == t[sel]).mean())
            metrics["f1_category_real"] = M.classification_scores(t[sel], pred10[sel], len(vocab))["f1"]
            # ... and what the service answers: the argmax over every taxonomy category
            metrics["acc_category_real_all"] = float((logits["category"].argmax(1)[sel] == t[sel]).mean())
            metrics["baseline_acc_category_real"] = M.majority_accuracy(t[sel])
            metrics["baseline_acc_category_real_all"] = metrics["baseline_acc_category_real"]
            metrics["n_real"] = float(sel.sum())
            if out_dir is not None:
                remap = {c: k for k, c in enumerate(main)}
                conf = M.confusion(
                    np.array([remap[c] for c in t[sel]]),
                    np.array([remap[c] for c in pred10[sel]]),
                    len(main),
                    ignore=None,
                )
                plots.append(
                    P.confusion_png(
                        conf,
                        list(MAIN_CATEGORIES),
                        "tagger category (real photos, 10 main labels)",
                        Path(out_dir) / "tagger_confusion_category_real.png",
                    )
                )
                plots.append(
                    _real_predictions_png(
                        df,
                        np.flatnonzero(sel),
                        logits["category"],
                        vocab,
                        Path(out_dir) / "tagger_real_predictions.png",
                    )
                )
        if "acc_min" in metrics and "acc_category_real" in metrics:
            metrics["acc_gate"] = (metrics["acc_min"] + metrics["acc_category_real"]) / 2
        return metrics, plots

    @torch.no_grad()
    def predict(self, model, images):
        """``{head: (value, probability)}`` per crop image."""
        model.eval()
        size = int(model.tailor_config["crop_size"])
        x = torch.stack([to_tensor(square_crop(im.convert("RGB"), None, size, context=0.0)) for im in images])
        out = model(x)
        res = [{} for _ in images]
        for h, lg in out.items():
            p = lg.softmax(1)
            conf, idx = p.max(1)
            for j in range(len(images)):
                res[j][h] = (model.vocab[h][int(idx[j])], float(conf[j]))
        return res


def _real_predictions_png(df, rows: np.ndarray, logits: np.ndarray, vocab: list[str], path: Path, n: int = 24) -> Path:
    """Held-out real photos captioned ``predicted (p) / truth``; frame green when right."""
    from PIL import ImageDraw

    size = 128
    picked = rows[:: max(1, len(rows) // n)][:n]
    prob = torch.from_numpy(logits[picked]).softmax(1).numpy()
    tiles = []
    for r, p in zip(picked, prob, strict=True):
        img = load_crop(df["image"][r], parse_bbox(df["bbox"][r]) if "bbox" in df else None, size - 8)
        k = int(p.argmax())
        ok = vocab[k] == df["category"][r]
        img = ImageOps.expand(img, 4, fill=(0, 170, 0) if ok else (210, 0, 0))
        d = ImageDraw.Draw(img)
        d.text((6, 4), f"{vocab[k]} {p[k]:.2f}", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        d.text(
            (6, size - 16), f"true: {df['category'][r]}", fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0)
        )
        tiles.append(np.asarray(img))
    return P.samples_png(tiles, path, "tagger on held-out real photos: predicted (p) / true category", cols=6)
