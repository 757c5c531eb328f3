"""The training loop shared by the four models: seeded, checkpointed every epoch,
resumable after a kill, early-stopped on the validation split's primary metric."""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


class Task:
    """What differs between models; the engine drives the rest. Subclasses live beside."""

    name: str = ""
    primary: str = ""
    fallback: tuple[str, ...] = ()  # primary metric candidates when the split lacks synthetic rows

    @staticmethod
    def eval_rows(df, cfg: dict[str, Any]):
        """The rows to evaluate: capped by ``eval_limit`` (tests, quick looks), index reset."""
        if cfg.get("eval_limit"):
            df = df.iloc[: int(cfg["eval_limit"])]
        return df.reset_index(drop=True)

    def bind(self, model) -> None:
        """Called by :func:`fit` before any dataset is built (tasks whose datasets need the
        model, e.g. for cached frozen features, keep it)."""

    def warm(self, model, df, cfg: dict[str, Any]) -> None:
        """Called after training with the held-out rows (tasks with a feature cache fill it
        now, so the evaluation tasks that run side by side do not each compute it)."""

    def prepare(self, cfg: dict[str, Any], frame) -> dict[str, Any]:
        """Fill data-derived settings (vocabularies) into ``cfg`` before building the model."""
        return cfg

    def dataset(self, df, train: bool, cfg: dict[str, Any]) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def collate(self, batch: list[Any]) -> Any:
        return torch.utils.data.default_collate(batch)

    def loader(self, ds, cfg: dict[str, Any], train: bool, epoch: int) -> torch.utils.data.DataLoader:
        """A DataLoader; shuffling (or weighted sampling) is seeded by (seed, epoch) so a
        resumed run draws the same batches as an uninterrupted one."""
        g = torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + epoch)
        sampler = None
        weights = ds.sample_weights() if hasattr(ds, "sample_weights") else None
        if train and weights is not None:
            sampler = torch.utils.data.WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double), len(weights), replacement=True, generator=g
            )
        # in-memory cached features need no loading: worker processes would only copy them
        # and compete with the training threads for the cores
        workers = 0 if getattr(ds, "in_memory", False) else int(cfg.get("workers") or 0)
        return torch.utils.data.DataLoader(
            ds,
            batch_size=int(cfg["batch_size"]),
            shuffle=train and sampler is None,
            sampler=sampler,
            generator=g,
            num_workers=workers,
            collate_fn=self.collate,
            drop_last=False,
            persistent_workers=False,
            multiprocessing_context="fork" if workers else None,
        )

    def step(self, model, batch, cfg: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def evaluate(self, model, df, cfg: dict[str, Any], out_dir: Path | None) -> tuple[dict[str, float], list[Path]]:
        raise NotImplementedError

    def predict(self, model, images: list[Any]) -> list[Any]:
        raise NotImplementedError

    def input_example(self, cfg: dict[str, Any]) -> Any:
        size = int(cfg.get("crop_size") or cfg.get("image_size") or 64)
        return np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)

    def primary_value(self, metrics: dict[str, float]) -> tuple[str, float]:
        """``(key, value)`` of the metric early stopping and the gate look at."""
        for key in (self.primary, *self.fallback):
            v = metrics.get(key)
            if v is not None and not math.isnan(v):
                return key, float(v)
        return self.primary, float("nan")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file then rename: a kill mid-write leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def lr_lambda(total: int, warmup: int):
    """Linear warm-up then cosine decay to 5 % (per optimiser step)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def fit(
    task: Task, model, train_df, val_df, cfg: dict[str, Any], out_dir: Path, cfg_hash: str, progress: bool = True
) -> dict[str, Any]:
    """Train ``model`` in place; returns ``{history, epochs_run, resumed_from, best_epoch}``.

    Writes ``out_dir/checkpoints/last.pt`` after every epoch and ``out_dir/model.pt`` (best
    weights + config) whenever the validation primary metric improves.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    last = out_dir / "checkpoints" / "last.pt"
    best_pt = out_dir / "model.pt"
    epochs = int(cfg["epochs"])
    task.bind(model)
    # The last checkpoint, read once: a finished run (the evaluate task reloads it) returns
    # before building the train split's datasets, which would read every cached feature for
    # nothing; an unfinished one resumes from it.
    # weights only: a checkpoint is tensors and plain containers, never code to run
    ck = torch.load(last, map_location="cpu", weights_only=True) if last.exists() else None
    if (
        ck is not None
        and ck.get("config_hash") == cfg_hash
        and (ck["state"]["stopped"] or ck["state"]["epoch"] >= epochs)
    ):
        done = ck["state"]
        return {
            "history": done["history"],
            "epochs_run": done["epoch"],
            "resumed_from": done["epoch"],
            "best_epoch": done["best_epoch"],
        }
    train_ds = task.dataset(train_df, True, cfg)
    steps = math.ceil(len(train_ds) / int(cfg["batch_size"]))
    if cfg.get("max_steps_per_epoch"):
        steps = min(steps, int(cfg["max_steps_per_epoch"]))
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"])
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(epochs * steps, int(cfg.get("warmup_epochs", 1)) * steps))
    state = {"epoch": 0, "history": [], "best": -math.inf, "best_epoch": 0, "bad": 0, "stopped": False}
    resumed_from = None
    if ck is not None:
        if ck.get("config_hash") == cfg_hash:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["torch_rng"])
            state = ck["state"]
            resumed_from = state["epoch"]
            print(f"[{task.name}] resuming after epoch {resumed_from} from {last}", file=sys.stderr)
        else:
            print(f"[{task.name}] {last} is from another config; starting afresh", file=sys.stderr)
    min_delta = float(cfg.get("min_delta", 0.0))
    patience = int(cfg.get("patience", 3))
    for epoch in range(state["epoch"] + 1, epochs + 1):
        if state["stopped"]:
            break
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        model.train()
        losses: list[float] = []
        parts_sum: dict[str, float] = {}
        bar = tqdm(
            total=steps, desc=f"{task.name} epoch {epoch}/{epochs}", disable=not progress, file=sys.stderr, leave=False
        )
        for i, batch in enumerate(task.loader(train_ds, cfg, True, epoch)):
            if i >= steps:
                break
            loss, parts = task.step(model, batch, cfg)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                if cfg.get("grad_clip"):
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg["grad_clip"]))
                opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        bar.close()
        metrics, _ = task.evaluate(model, val_df, cfg, None)
        key, value = task.primary_value(metrics)
        rec = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "steps": len(losses),
            "lr": float(opt.param_groups[0]["lr"]),
            **{f"train_{k}": v / max(1, len(losses)) for k, v in parts_sum.items()},
            **{f"val_{k}": v for k, v in metrics.items()},
            "seconds": round(time.perf_counter() - t0, 2),
        }
        state["history"].append(rec)
        improved = not math.isnan(value) and value > state["best"] + min_delta
        if improved or state["best_epoch"] == 0:
            state["best"] = value if not math.isnan(value) else state["best"]
            state["best_epoch"] = epoch
            state["bad"] = 0
            atomic_save(
                {
                    "name": task.name,
                    "config": json.dumps(cfg, default=str),
                    "state_dict": model.state_dict(),
                    "epoch": epoch,
                    "metric": key,
                    "value": value,
                },
                best_pt,
            )
        else:
            state["bad"] += 1
        state["epoch"] = epoch
        state["stopped"] = state["bad"] >= patience
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "state": state,
                "config_hash": cfg_hash,
            },
            last,
        )
        if progress:
            print(
                f"[{task.name}] epoch {epoch}: loss {rec['train_loss']:.4f} val {key} {value:.4f}"
                f" ({rec['seconds']:.1f}s){' *' if improved else ''}",
                file=sys.stderr,
            )
        if state["stopped"]:
            print(f"[{task.name}] early stop: no val improvement for {patience} epochs", file=sys.stderr)
    return {
        "history": state["history"],
        "epochs_run": state["epoch"],
        "resumed_from": resumed_from,
        "best_epoch": state["best_epoch"],
    }


def run_history(out_dir: Path) -> dict[str, Any]:
    """What a training run directory says about its progress, finished or not (a run cut
    short resumes from the same checkpoint): ``{epoch, best_epoch, stopped, history}`` from
    ``checkpoints/last.pt``. Raises FileNotFoundError when the run has no checkpoint yet."""
    last = Path(out_dir) / "checkpoints" / "last.pt"
    if not last.exists():
        raise FileNotFoundError(f"{last} does not exist: the run has not finished an epoch yet")
    # weights only: a checkpoint is tensors and plain containers, never code to run
    state = torch.load(last, map_location="cpu", weights_only=True)["state"]
    return {k: state[k] for k in ("epoch", "best_epoch", "stopped", "history")}
