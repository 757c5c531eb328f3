"""Frozen-trunk features, computed once per crop (shared by the tagger and the embedder) or
once per scene image (shared by the detector and the parser).

On 2 CPU cores most of a fine-tuning step is the pretrained stem and first stages, which
``freeze_blocks`` keeps fixed. Their output for a crop never changes, so it is computed
once (decode, crop, resize, forward) and stored under ``settings.cache_dir``; every epoch,
the validation passes, the held-out evaluation and the *other* crop model then read it
instead of recomputing it. The tagger and the embedder crop the same rows the same way,
so the second of them finds the whole cache warm.

Cache entries are keyed by what determines them: the trunk's frozen weights (the packaged
ImageNet weights; a trunk without them is never cached), the number of frozen stages,
the crop size, and the image file's bytes plus the box. Files are written atomically.

Scene images (:func:`scene_features`) are cached as the outputs of the trunk's blocks
:data:`models._common.SCENE_BLOCKS` (the stride-8, 16 and 32 stage ends) on the square
canvas both image models draw, unflipped and mirrored (the one augmentation that keeps
every label valid). The detector trains its FPN and heads on them, the parser fine-tunes
the stages after block 2; neither pays for the high-resolution stages again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models._common import Descriptor, fold_batchnorm

from .data import load_crop, parse_bbox, to_tensor

#: bump when the crop or prefix computation changes meaning (2: crops draw the box only)
_VERSION = 2


def cache_enabled(cfg: dict[str, Any]) -> bool:
    """Whether ``cfg`` trains from cached prefix features: pretrained Lite0 trunk (fixed,
    known weights), at least one frozen stage, and ``feature_cache`` on."""
    from models.pretrained import LITE0

    return (
        bool(cfg.get("feature_cache", True))
        and int(cfg.get("freeze_blocks") or 0) > 0
        and bool(cfg.get("pretrained"))
        and str(cfg.get("backbone")) == LITE0
    )


def _space(cfg: dict[str, Any]) -> str:
    """The cache sub-directory of one (trunk weights, frozen stages, crop size) setting."""
    from models.pretrained import weights_file

    spec = {
        "v": _VERSION,
        "weights": weights_file().name,
        "backbone": cfg["backbone"],
        "freeze_blocks": int(cfg["freeze_blocks"]),
        "crop_size": int(cfg["crop_size"]),
        "descriptor": dataclasses.asdict(Descriptor.from_config(cfg)),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _file_digest(path: str, memo: dict[str, str]) -> str:
    if path not in memo:
        st = os.stat(path)
        # content-addressed snapshots name files by sha256 already; size+mtime is enough elsewhere
        name = Path(path).stem
        memo[path] = name if len(name) == 64 else f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return memo[path]


def row_keys(df, cfg: dict[str, Any]) -> list[str]:
    """One cache key per manifest row (image content + box)."""
    memo: dict[str, str] = {}
    keys = []
    for img, bbox in zip(df["image"], df["bbox"] if "bbox" in df else [None] * len(df), strict=True):
        box = parse_bbox(bbox)
        text = f"{_file_digest(str(img), memo)}|{json.dumps([round(v, 1) for v in box] if box else None)}"
        keys.append(hashlib.sha1(text.encode()).hexdigest())
    return keys


class _Crops(torch.utils.data.Dataset):
    def __init__(self, images: list[str], boxes: list[Any], size: int) -> None:
        self.images, self.boxes, self.size = images, boxes, size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_tensor(load_crop(self.images[i], parse_bbox(self.boxes[i]), self.size))


def prefix_features(
    model, df, cfg: dict[str, Any], cache_dir: Path | None = None, progress: bool = True
) -> torch.Tensor:
    """``model.prefix`` of every row's crop, (N, C, h, w) float32, from the cache where present.

    Missing entries are computed in batches (decoding in ``cfg['workers']`` processes) and
    stored. ``model`` must be in the configuration the cache key describes (checked:
    its ``freeze_blocks`` and crop size).
    """
    from tqdm import tqdm

    from pipelines.settings import get_settings

    if int(getattr(model, "freeze_blocks", 0)) != int(cfg["freeze_blocks"]):
        raise ValueError(f"model freezes {getattr(model, 'freeze_blocks', 0)} stages, config {cfg['freeze_blocks']}")
    root = Path(cache_dir or get_settings().cache_dir) / "prefix" / _space(cfg)
    keys = row_keys(df, cfg)
    paths = [root / k[:2] / f"{k}.npy" for k in keys]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        images = [str(df["image"].iloc[i]) for i in todo]
        boxes = [df["bbox"].iloc[i] if "bbox" in df else None for i in todo]
        workers = int(cfg.get("workers") or 0)
        loader = torch.utils.data.DataLoader(
            _Crops(images, boxes, int(cfg["crop_size"])),
            batch_size=32,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        # The prefix is frozen, so a folded, channels-last copy computes the same numbers faster.
        fast = fold_batchnorm(copy.deepcopy(model).eval()).to(memory_format=torch.channels_last)
        done = 0
        with (
            torch.no_grad(),
            tqdm(
                total=len(todo),
                desc=f"frozen features ({cfg['crop_size']} px)",
                disable=not progress,
                file=sys.stderr,
                leave=False,
            ) as bar,
        ):
            for x in loader:
                f = fast.prefix(x.contiguous(memory_format=torch.channels_last)).to(torch.float16).numpy()
                for j in range(len(f)):
                    p = paths[todo[done + j]]
                    p.parent.mkdir(parents=True, exist_ok=True)
                    tmp = p.with_suffix(f".{os.getpid()}.tmp")
                    with tmp.open("wb") as fh:
                        np.save(fh, np.ascontiguousarray(f[j]))
                    os.replace(tmp, p)
                done += len(f)
                bar.update(len(f))
    feats = np.stack([np.load(p) for p in paths]) if paths else np.zeros((0,), np.float16)
    return torch.from_numpy(feats.astype(np.float32))


class FeatureRows(torch.utils.data.Dataset):
    """A crop dataset (:class:`~pipelines.train.tagger.CropDataset` family) that serves
    cached prefix features instead of decoding crops: same items, labels, sampling weights
    and epochs (everything but ``__getitem__`` is the wrapped dataset's)."""

    def __init__(self, base, feats: torch.Tensor) -> None:
        if len(feats) != len(base.df):
            raise ValueError(f"{len(feats)} cached features for {len(base.df)} rows")
        self.base, self.feats = base, feats

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):
        if name in ("base", "feats"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, idx: int):
        i, _ = self.base.items[idx]
        return self.feats[i], self.base.target(i)


def scene_cache_enabled(cfg: dict[str, Any], backbone_key: str = "backbone") -> bool:
    """Whether an image model (detector, parser) trains from cached scene features: the
    packaged Lite0 trunk, ``freeze_blocks`` ending at a cached block, ``feature_cache`` on."""
    from models._common import SCENE_BLOCKS
    from models.pretrained import LITE0

    k = int(cfg.get("freeze_blocks") or 0)
    name = str(cfg.get(backbone_key, "")).removeprefix("tu-")
    return (
        bool(cfg.get("feature_cache", True)) and bool(cfg.get("pretrained")) and name == LITE0 and k - 1 in SCENE_BLOCKS
    )


class _Scenes(torch.utils.data.Dataset):
    def __init__(self, images: list[str], size: int, fill: tuple[int, int, int]) -> None:
        self.images, self.size, self.fill = images, size, fill

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        from .data import load_rgb, square_canvas

        canvas, _ = square_canvas(load_rgb(self.images[i]), self.size, self.fill)
        return to_tensor(canvas)


def scene_features(
    images: list[str],
    size: int,
    fill: tuple[int, int, int],
    flips: bool,
    cache_dir: Path | None = None,
    workers: int = 0,
    progress: bool = True,
) -> dict[bool, dict[int, torch.Tensor]]:
    """Cached trunk block outputs of each image drawn on the ``size`` square canvas
    (:func:`pipelines.train.data.square_canvas`, ``fill`` around it):
    ``{mirrored: {block: (N, C, h, w) float16}}`` with ``mirrored`` False, and True too when
    ``flips``. Missing entries are computed with the packaged Lite0 weights and stored."""
    from tqdm import tqdm

    from models._common import SCENE_BLOCKS, fold_batchnorm, normalise, scene_maps, timm_backbone
    from models.pretrained import LITE0, load_lite0, weights_file
    from pipelines.settings import get_settings

    spec = {
        "v": _VERSION,
        "weights": weights_file().name,
        "backbone": LITE0,
        "blocks": list(SCENE_BLOCKS),
        "size": int(size),
        "fill": list(fill),
    }
    root = (
        Path(cache_dir or get_settings().cache_dir)
        / "scenes"
        / hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    )
    memo: dict[str, str] = {}
    keys = [hashlib.sha1(_file_digest(str(p), memo).encode()).hexdigest() for p in images]
    paths = [root / k[:2] / f"{k}.npz" for k in keys]
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    if todo:
        trunk = timm_backbone(LITE0, False, features_only=True, out_indices=(2, 3, 4))
        load_lite0(trunk)
        trunk = fold_batchnorm(trunk.eval()).to(memory_format=torch.channels_last)
        loader = torch.utils.data.DataLoader(
            _Scenes([str(images[i]) for i in todo], int(size), fill),
            batch_size=16,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        done = 0
        with (
            torch.no_grad(),
            tqdm(
                total=len(todo),
                desc=f"frozen scene features ({size} px)",
                disable=not progress,
                file=sys.stderr,
                leave=False,
            ) as bar,
        ):
            for x in loader:
                both = torch.cat([x, x.flip(-1)])  # unflipped and mirrored in one pass
                maps = scene_maps(trunk, normalise(both).contiguous(memory_format=torch.channels_last))
                arrays = {f"b{b}": m.to(torch.float16).numpy() for b, m in maps.items()}
                for j in range(len(x)):
                    p = paths[todo[done + j]]
                    p.parent.mkdir(parents=True, exist_ok=True)
                    tmp = p.with_suffix(f".{os.getpid()}.tmp")
                    with tmp.open("wb") as fh:
                        np.savez(
                            fh,
                            **{f"{k}_0": np.ascontiguousarray(a[j]) for k, a in arrays.items()},
                            **{f"{k}_1": np.ascontiguousarray(a[len(x) + j]) for k, a in arrays.items()},
                        )
                    os.replace(tmp, p)
                done += len(x)
                bar.update(len(x))
    out: dict[bool, dict[int, list[np.ndarray]]] = {False: {b: [] for b in SCENE_BLOCKS}}
    if flips:
        out[True] = {b: [] for b in SCENE_BLOCKS}
    for p in paths:
        with np.load(p) as z:
            for mirrored, maps in out.items():
                for b in SCENE_BLOCKS:
                    maps[b].append(z[f"b{b}_{int(mirrored)}"])
    return {
        m: {b: torch.from_numpy(np.stack(v)) if v else torch.zeros(0) for b, v in maps.items()}
        for m, maps in out.items()
    }
