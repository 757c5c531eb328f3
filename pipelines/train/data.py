"""Image loading, crops, augmentation and the sampling of manifest rows (repeat / weight)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB (fully decoded, so a truncated file fails here, not later)."""
    with Image.open(path) as im:
        return im.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def resize_long(img: Image.Image, size: int) -> tuple[Image.Image, float]:
    """``img`` resized (bilinear, aspect kept) so its long side is ``size``; returns (image, scale)."""
    s = size / max(img.size)
    return img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR), s


#: Canvas fill around an image drawn on a square (:func:`square_canvas`) for the image
#: models: the normalisation mean, i.e. 0 after normalising, the value convolutions pad
#: with at borders. The detector and the parser share it, so they share cached features.
CANVAS_FILL: tuple[int, int, int] = (124, 116, 104)


def square_canvas(
    img: Image.Image, size: int, fill: tuple[int, int, int] = (128, 128, 128)
) -> tuple[Image.Image, tuple[float, int, int]]:
    """``img`` fitted into a ``size`` square (:func:`resize_long`) at the top left, the rest
    ``fill``; returns (canvas, (scale, w, h)) with ``w x h`` the resized image's size.
    One shape for every image, so images batch without padding and without changing results."""
    small, s = resize_long(img, size)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(small, (0, 0))
    return canvas, (s, small.width, small.height)


def parse_bbox(value: Any) -> list[float] | None:
    """A manifest ``bbox`` cell (JSON text, list or None) as ``[x, y, w, h]`` or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return [float(v) for v in value]


def load_crop(path: str, bbox: list[float] | None, size: int, context: float = 0.1) -> Image.Image:
    """:func:`square_crop` of the image file at ``path``, decoding no more pixels than the
    crop needs: a JPEG is scaled down in the DCT domain (``draft``) by the largest power of
    two that still leaves the crop at least ``size`` pixels wide (a 3000-px photo cropped
    to 224 px decodes about 8x faster)."""
    with Image.open(path) as im:
        W, H = im.size
        x, y, w, h = bbox if bbox is not None else (0.0, 0.0, float(W), float(H))
        side = max(w, h, 4.0) * (1.0 + context)
        if im.format == "JPEG" and side > 2 * size:
            f = side / size  # the crop may shrink by this factor and keep ``size`` pixels
            im.draft("RGB", (max(1, int(W / f)), max(1, int(H / f))))
        img = im.convert("RGB")
    s = img.width / W
    if bbox is not None and s != 1.0:
        bbox = [v * s for v in (x, y, w, h)]
    return square_crop(img, bbox, size, context=context)


def square_crop(
    img: Image.Image,
    bbox: list[float] | None,
    size: int,
    context: float = 0.1,
    jitter: tuple[float, float, float] | None = None,
) -> Image.Image:
    """A ``size`` x ``size`` crop of ``bbox`` (whole image if None), aspect kept.

    Only the box, grown by ``context`` of its size, is drawn; the rest of the square is
    grey. That is what the search service embeds (the detector's box, cut out and drawn on
    grey), and it keeps neighbours out of the crop: a wide pair of shoes does not bring the
    legs above it, whose colour would otherwise sit in the crop's centre. The crop keeps the
    garment's shape (a tall pair of trousers stays tall). ``jitter`` (dx, dy, scale) shifts
    and scales the square for augmentation.
    """
    W, H = img.size
    x, y, w, h = bbox if bbox is not None else (0.0, 0.0, float(W), float(H))
    side = max(w, h) * (1.0 + context)
    cx, cy = x + w / 2, y + h / 2
    # the drawn region: the box and its context margin, clipped to the image
    keep = (
        max(0.0, x - w * context / 2),
        max(0.0, y - h * context / 2),
        min(float(W), x + w + w * context / 2),
        min(float(H), y + h + h * context / 2),
    )
    if jitter is not None:
        dx, dy, sc = jitter
        cx += dx * side
        cy += dy * side
        side *= sc
    side = max(side, 4.0)
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    canvas = Image.new("RGB", (size, size), (128, 128, 128))
    # crop the part of the kept region inside the square, paste it where it belongs
    ix0, iy0 = int(round(max(box[0], keep[0]))), int(round(max(box[1], keep[1])))
    ix1, iy1 = int(round(min(box[2], keep[2]))), int(round(min(box[3], keep[3])))
    if ix1 > ix0 and iy1 > iy0:
        s = size / side
        part = img.crop((ix0, iy0, ix1, iy1)).resize(
            (max(1, round((ix1 - ix0) * s)), max(1, round((iy1 - iy0) * s))), Image.BILINEAR
        )
        canvas.paste(part, (int(round((ix0 - box[0]) * s)), int(round((iy0 - box[1]) * s))))
    return canvas


def photometric(img: Image.Image, rng: np.random.Generator, strength: float = 1.0) -> Image.Image:
    """Brightness/contrast/sharpness jitter. No hue shift: colour is a label."""
    img = ImageEnhance.Brightness(img).enhance(1.0 + strength * rng.uniform(-0.2, 0.2))
    img = ImageEnhance.Contrast(img).enhance(1.0 + strength * rng.uniform(-0.2, 0.2))
    return ImageEnhance.Sharpness(img).enhance(1.0 + strength * rng.uniform(-0.5, 0.5))


def expand_rows(repeat: np.ndarray) -> list[tuple[int, int]]:
    """``(row, copy)`` for every draw of an epoch: a row with ``repeat`` r appears r times;
    copies > 0 are the oversampled repeats, which the datasets augment more strongly."""
    return [(i, k) for i, r in enumerate(repeat.astype(int)) for k in range(max(1, r))]


class RowDataset(torch.utils.data.Dataset):
    """Base: one item per (row, copy) with a per-item random generator.

    The generator is seeded by (seed, epoch, index) so augmentation is reproducible across
    worker counts and after a resume; ``set_epoch`` is called by the engine.
    """

    def __init__(self, df, train: bool, seed: int, cfg: dict[str, Any]) -> None:
        self.df = df.reset_index(drop=True)
        self.train = train
        self.seed = seed
        self.cfg = cfg
        rep = self.df["repeat"].to_numpy() if (train and "repeat" in self.df) else np.ones(len(self.df))
        self.items = expand_rows(rep)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change augmentation draws for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def rng(self, idx: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, idx])

    def aug_level(self, copy: int) -> float:
        """0 for evaluation, 0.5 for a first draw, 1 for an oversampled repeat."""
        if not self.train:
            return 0.0
        return 1.0 if copy > 0 else 0.5

    def sample_weights(self) -> np.ndarray | None:
        """Per-item sampling weights when the manifest uses weights (else None)."""
        if not self.train or "weight" not in self.df:
            return None
        w = self.df["weight"].to_numpy(dtype=float)
        if np.allclose(w, 1.0):
            return None
        return np.array([w[i] for i, _ in self.items])
