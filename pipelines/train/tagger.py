"""Tagger task: garment crops, masked multi-head cross-entropy, per-head accuracy / macro-F1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import ImageOps

from . import metrics as M
from . import plots as P
from .data import RowDataset, load_rgb, parse_bbox, photometric, square_crop, to_tensor
from .engine import Task

#: the head trained on the real photos' own labels (its vocabulary: REAL_LABELS)
REAL_HEAD = "label"


def _known(v) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v)) and not pd.isna(v)


class CropDataset(RowDataset):
    """A square crop around ``bbox``; augmentation = shift/scale jitter, flip, photometric."""

    def crop(self, idx: int):
        i, copy = self.items[idx]
        row = self.df.iloc[i]
        level = self.aug_level(copy)
        rng = self.rng(idx)
        jitter = None
        if level:
            jitter = (rng.uniform(-0.06, 0.06) * level, rng.uniform(-0.06, 0.06) * level, 1.0 + rng.uniform(-0.12, 0.12) * level)
        img = square_crop(load_rgb(row["image"]), parse_bbox(row.get("bbox")), int(self.cfg["crop_size"]), jitter=jitter)
        if level:
            img = photometric(img, rng, level)
            if rng.random() < 0.5:
                img = ImageOps.mirror(img)
        return i, to_tensor(img)


class TaggerDataset(CropDataset):
    def __init__(self, df, train, seed, cfg):
        super().__init__(df, train, seed, cfg)
        heads = cfg["heads"]
        # targets precomputed once: index in the head's vocabulary, -1 = unknown (masked)
        self.targets = {h: np.array([vocab.index(v) if _known(v) and v in vocab else -1
                                     for v in (self.df[h] if h in self.df else [None] * len(self.df))], np.int64)
                        for h, vocab in heads.items()}

    def __getitem__(self, idx: int):
        i, x = self.crop(idx)
        return x, {h: int(t[i]) for h, t in self.targets.items()}


class TaggerTask(Task):
    name = "tagger"
    primary = "acc_mean"
    fallback = ("acc_category_real",)

    def prepare(self, cfg, frame):
        from pipelines.ingest.photos import REAL_LABELS
        from pipelines.synth.taxonomy import ATTRIBUTES, CATEGORIES

        heads = {"category": list(CATEGORIES), **{a: list(v) for a, v in ATTRIBUTES.items()}}
        if REAL_HEAD in frame and frame[REAL_HEAD].map(_known).any():
            heads[REAL_HEAD] = list(REAL_LABELS)
        cfg["heads"] = heads
        return cfg

    def dataset(self, df, train, cfg):
        return TaggerDataset(df, train, int(cfg["seed"]), cfg)

    def step(self, model, batch, cfg):
        from models.tagger import masked_cross_entropy

        x, y = batch
        return masked_cross_entropy(model(x), y)

    @torch.no_grad()
    def logits(self, model, df, cfg):
        model.eval()
        ds = TaggerDataset(df, False, 0, cfg)
        outs: dict[str, list[np.ndarray]] = {}
        for x, _ in torch.utils.data.DataLoader(ds, batch_size=64, num_workers=0):
            for h, lg in model(x).items():
                outs.setdefault(h, []).append(lg.numpy())
        return {h: np.concatenate(v) for h, v in outs.items()}, ds.targets

    def evaluate(self, model, df, cfg, out_dir):
        from pipelines.ingest.photos import MAIN_LABELS

        df = self.eval_rows(df, cfg)
        metrics: dict[str, float] = {}
        plots: list[Path] = []
        if not len(df):
            return metrics, plots
        logits, targets = self.logits(model, df, cfg)
        is_real = (df["source"] == "photos").to_numpy() if "source" in df else np.zeros(len(df), bool)
        heads = cfg["heads"]
        accs = []
        for h, vocab in heads.items():
            if h == REAL_HEAD:
                continue
            sel = (~is_real) & (targets[h] >= 0)
            if not sel.any():
                continue
            pred = logits[h].argmax(1)
            s = M.classification_scores(targets[h][sel], pred[sel], len(vocab))
            metrics[f"acc_{h}"], metrics[f"f1_{h}"] = s["acc"], s["f1"]
            accs.append(s["acc"])
            if out_dir is not None:
                conf = M.confusion(targets[h][sel], pred[sel], len(vocab), ignore=None)
                plots.append(P.confusion_png(conf, vocab, f"tagger {h} (synthetic)", Path(out_dir) / f"tagger_confusion_{h}.png"))
        if accs:
            metrics["acc_min"], metrics["acc_mean"] = float(min(accs)), float(np.mean(accs))
        if is_real.any() and REAL_HEAD in heads:
            vocab = heads[REAL_HEAD]
            main = np.array([vocab.index(m) for m in MAIN_LABELS])
            t = targets[REAL_HEAD]
            sel = is_real & np.isin(t, main)
            if sel.any():
                # "category accuracy over the 10 main labels": the prediction is restricted to them
                lg = logits[REAL_HEAD][:, main]
                pred = main[lg.argmax(1)]
                s = M.classification_scores(t[sel], pred[sel], len(vocab))
                metrics["acc_category_real"], metrics["f1_category_real"] = s["acc"], s["f1"]
                if out_dir is not None:
                    remap = {c: k for k, c in enumerate(main)}
                    conf = M.confusion(np.array([remap[c] for c in t[sel]]), np.array([remap[c] for c in pred[sel]]), len(main), ignore=None)
                    plots.append(P.confusion_png(conf, list(MAIN_LABELS), "tagger category (real photos, 10 main labels)",
                                                 Path(out_dir) / "tagger_confusion_category_real.png"))
            sel = is_real & (targets["category"] >= 0)
            if sel.any():
                metrics["acc_taxonomy_category_real"] = float((logits["category"].argmax(1)[sel] == targets["category"][sel]).mean())
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
