"""Rasterise figures and garments into an image, a parsing map and an instance map.

One job renders one image (shop shot, model shot or street scene) from a per-image random
generator, so output is independent of job order and of the number of worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pycocotools import mask as mask_utils

from ._geometry import (
    _FLAT_FRAMES,
    TEXTURE_FRAMES,
    BodyShape,
    Frames,
    Part,
    Pose,
    body_parts,
    garment_parts,
    skeleton,
)
from ._paint import (
    pattern_rgb,
    photometric,
    street_background,
    studio_background,
    to_jpeg,
    to_png_labels,
)
from .taxonomy import TAXONOMY

Paint = Callable[[str, np.ndarray, np.ndarray], np.ndarray]

#: draw order of garment layers (later layers overwrite earlier ones).
LAYER = {
    "skirt": 1,
    "pants": 1,
    "shorts": 1,
    "t-shirt": 2,
    "shirt": 2,
    "sweater": 2,
    "dress": 2,
    "outerwear": 3,
    "shoes": 4,
    "bag": 5,
    "hat": 6,
}
TOPS = ("t-shirt", "shirt", "sweater")
BOTTOMS = ("skirt", "pants", "shorts")

SKIN_TONES = [
    (255, 224, 196),
    (241, 194, 160),
    (224, 172, 130),
    (198, 140, 100),
    (160, 105, 70),
    (120, 78, 50),
    (88, 57, 38),
    (236, 188, 150),
]
HAIR_COLORS = [
    (20, 16, 14),
    (58, 38, 24),
    (98, 64, 36),
    (170, 130, 80),
    (220, 190, 120),
    (150, 60, 30),
    (160, 160, 160),
    (90, 90, 95),
]


@dataclass
class Rendered:
    """One rendered image with its label map and instance annotations (no ids yet)."""

    role: str
    stem: str
    width: int
    height: int
    jpeg: bytes
    png: bytes
    anns: list[dict[str, Any]] = field(default_factory=list)


def _mat(a: float, b: float, c: float, d: float, e: float, f: float) -> np.ndarray:
    return np.array([[a, b, c], [d, e, f], [0, 0, 1]], dtype=np.float64)


def similarity(
    scale: float, tx: float, ty: float, rot: float = 0.0, pivot: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Figure units -> image pixels: rotate about ``pivot`` (figure units), scale, translate."""
    c, s = math.cos(rot), math.sin(rot)
    r = _mat(c, -s, 0, s, c, 0)
    return (
        _mat(1, 0, tx, 0, 1, ty)
        @ _mat(scale, 0, 0, 0, scale, 0)
        @ _mat(1, 0, pivot[0], 0, 1, pivot[1])
        @ r
        @ _mat(1, 0, -pivot[0], 0, 1, -pivot[1])
    )


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:2, :2].T + m[:2, 2]


class Canvas:
    """RGB float image plus parsing labels and garment-instance ids, drawn part by part."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self.h, self.w = rgb.shape[:2]
        self.label = np.zeros((self.h, self.w), np.uint8)
        self.inst = np.zeros((self.h, self.w), np.int32)
        self.polys: dict[int, list[np.ndarray]] = {}

    def draw(
        self,
        poly: np.ndarray,
        frame: np.ndarray,
        tex: np.ndarray,
        paint: Paint,
        key: str,
        cls: int,
        inst: int,
        shade: float,
    ) -> None:
        """Fill image polygon ``poly``; colours come from ``paint`` at texture coordinates.

        ``frame`` maps part-local -> image; ``tex`` maps part-local -> texture units.
        """
        if inst > 0:
            self.polys.setdefault(inst, []).append(poly)
        x0 = max(0, int(math.floor(poly[:, 0].min())))
        y0 = max(0, int(math.floor(poly[:, 1].min())))
        x1 = min(self.w, int(math.ceil(poly[:, 0].max())) + 1)
        y1 = min(self.h, int(math.ceil(poly[:, 1].max())) + 1)
        if x1 <= x0 or y1 <= y0:
            return
        m = Image.new("L", (x1 - x0, y1 - y0), 0)
        ImageDraw.Draw(m).polygon([(float(x) - x0, float(y) - y0) for x, y in poly], fill=1)
        ys, xs = np.nonzero(np.asarray(m))
        if len(ys) == 0:
            return
        ys = ys + y0
        xs = xs + x0
        inv = np.linalg.inv(frame)
        px, py = xs + 0.5, ys + 0.5
        lu = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2]
        lv = inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
        gx = (tex[0, 0] * lu + tex[0, 1] * lv + tex[0, 2]).astype(np.float32)
        gy = (tex[1, 0] * lu + tex[1, 1] * lv + tex[1, 2]).astype(np.float32)
        col = paint(key, gx, gy)
        if shade > 0:
            # cylinder shading across the part plus a soft highlight off-centre
            t = np.clip(np.abs(lu) / 1.3, 0, 1).astype(np.float32)
            f = 1 - shade * t * t + shade * 0.25 * np.exp(-((lu - 0.35) ** 2) * 4).astype(np.float32)
            col = col * f[:, None]
        self.rgb[ys, xs] = col
        self.label[ys, xs] = cls
        self.inst[ys, xs] = inst

    def full_area(self, inst: int) -> int:
        """Pixel area of an instance as if unoccluded and unclipped by the image border."""
        polys = self.polys.get(inst)
        if not polys:
            return 0
        allp = np.concatenate(polys)
        x0, y0 = np.floor(allp.min(0)).astype(int)
        x1, y1 = np.ceil(allp.max(0)).astype(int) + 1
        m = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
        d = ImageDraw.Draw(m)
        for p in polys:
            d.polygon([(float(x) - x0, float(y) - y0) for x, y in p], fill=1)
        return int(np.asarray(m).sum())


def product_paint(r: dict) -> Paint:
    """Paint function of a product (``r`` = its render params)."""

    def paint(key: str, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        if key == "trim":
            return np.broadcast_to(np.asarray(r["rgb_trim"], np.float32), (len(gx), 3)).copy()
        if key == "second":
            return np.broadcast_to(np.asarray(r["rgb2"], np.float32), (len(gx), 3)).copy()
        col = pattern_rgb(r, gx, gy)
        return col * 0.72 if key == "dark" else col

    return paint


def body_paint(shape: BodyShape) -> Paint:
    """Paint function for skin, hair and face details of a figure."""
    skin = np.asarray(shape.skin, np.float32)
    hair = np.asarray(shape.hair, np.float32)

    def paint(key: str, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        n = len(gx)
        if key == "hair":
            strand = 1 + 0.12 * np.sin(gx * 5.0 + np.sin(gy * 0.8) * 2)
            return hair[None, :] * strand[:, None]
        if key == "eye":
            return np.broadcast_to(np.asarray((35, 28, 26), np.float32), (n, 3)).copy()
        if key == "lip":
            return np.broadcast_to(skin * 0.72 + np.asarray((60, 10, 10), np.float32), (n, 3)).copy()
        return np.broadcast_to(skin, (n, 3)).copy()

    return paint


def _draw_parts(
    cv: Canvas, frames: Frames, G: np.ndarray, parts: list[Part], paint: Paint, cls_of: Callable[[Part], int], inst: int
) -> None:
    for part in parts:
        f = G @ frames[part.frame]
        cv.draw(_apply(f, part.poly), f, TEXTURE_FRAMES[part.frame], paint, part.paint, cls_of(part), inst, part.shade)


def draw_figure(cv: Canvas, G: np.ndarray, shape: BodyShape, pose: Pose, worn: list[tuple[dict, int]]) -> None:
    """Draw a body and its garments (``worn``: product, instance id) in layer order."""
    frames, aspect = skeleton(shape, pose)
    _draw_parts(cv, frames, G, body_parts(shape, aspect), body_paint(shape), lambda p: 2 if p.paint == "hair" else 1, 0)
    for prod, inst in sorted(worn, key=lambda t: LAYER[t[0]["category"]]):
        cls = TAXONOMY.parsing_class(prod["category"])
        parts = garment_parts(prod["category"], prod["attributes"], prod["render"])
        _draw_parts(cv, frames, G, parts, product_paint(prod["render"]), lambda p, c=cls: c, inst)


def extract_annotations(cv: Canvas, worn: dict[int, dict]) -> list[dict[str, Any]]:
    """COCO annotations (visible part) for every instance; tiny or hidden ones dropped."""
    anns: list[dict[str, Any]] = []
    for inst, prod in sorted(worn.items()):
        m = cv.inst == inst
        area = int(m.sum())
        if area == 0:
            continue
        rows = np.flatnonzero(m.any(1))
        cols = np.flatnonzero(m.any(0))
        x0, x1, y0, y1 = int(cols[0]), int(cols[-1]), int(rows[0]), int(rows[-1])
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        full = max(area, cv.full_area(inst))
        vis = area / full
        if vis < 0.1 or bw < 4 or bh < 4:
            continue
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "category_id": TAXONOMY.category_id(prod["category"]),
                "bbox": [x0, y0, bw, bh],
                "area": area,
                "segmentation": {"size": [cv.h, cv.w], "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
                "product_id": prod["product_id"],
                "attributes": dict(prod["attributes"]),
                "visible_fraction": round(vis, 4),
            }
        )
    return anns


# ------------------------------------------------------------------------- sampling


def sample_body(rng: np.random.Generator) -> BodyShape:
    """A random body shape with skin tone and hair."""
    skin = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))]) + rng.normal(0, 6, 3)
    hair = np.asarray(HAIR_COLORS[rng.integers(len(HAIR_COLORS))]) + rng.normal(0, 6, 3)
    style = ["short", "long", "bun", "bald", "long"][int(rng.integers(5))]
    return BodyShape(
        bw=float(rng.uniform(0.88, 1.15)),
        hipf=float(rng.uniform(0.9, 1.15)),
        skin=tuple(int(v) for v in np.clip(skin, 0, 255)),  # type: ignore[arg-type]
        hair=tuple(int(v) for v in np.clip(hair, 0, 255)),  # type: ignore[arg-type]
        hair_style=style,
    )


def sample_pose(rng: np.random.Generator, wild: bool) -> Pose:
    """A standing pose; ``wild`` allows raised arms, wide stances and bent knees."""

    def arm() -> float:
        if wild and rng.random() < 0.22:
            return float(rng.uniform(1.2, 2.7))
        return float(rng.uniform(0.04, 0.55 if wild else 0.4))

    bend = (-0.8, 1.3) if wild else (-0.3, 0.6)
    return Pose(
        arm_l=arm(),
        arm_r=arm(),
        bend_l=float(rng.uniform(*bend)),
        bend_r=float(rng.uniform(*bend)),
        leg_l=float(rng.uniform(0.0, 0.3 if wild else 0.14)),
        leg_r=float(rng.uniform(0.0, 0.3 if wild else 0.14)),
        knee_l=float(rng.uniform(-0.15, 0.3 if wild else 0.08)),
        knee_r=float(rng.uniform(-0.15, 0.3 if wild else 0.08)),
    )


def sample_outfit(
    rng: np.random.Generator,
    pools: dict[str, list[dict]],
    force: dict | None = None,
    *,
    outer_p: float = 0.35,
    bag_p: float = 0.3,
    hat_p: float = 0.25,
    shoes_p: float = 0.92,
) -> list[dict]:
    """A plausible outfit of catalogue products (dress, or top + bottom; extras)."""
    chosen: dict[str, dict] = {}

    def pick(cats: tuple[str, ...]) -> dict | None:
        pool = [p for c in cats for p in pools.get(c, [])]
        return pool[int(rng.integers(len(pool)))] if pool else None

    def put(p: dict | None) -> None:
        if p is not None:
            chosen[p["category"]] = p

    if force is not None:
        put(force)
    fc = force["category"] if force else None
    if fc == "dress" or (fc not in TOPS + BOTTOMS and pools.get("dress") and rng.random() < 0.25):
        if fc != "dress":
            put(pick(("dress",)))
    else:
        if fc not in TOPS:
            put(pick(TOPS))
        if fc not in BOTTOMS:
            put(pick(BOTTOMS))
    if fc == "outerwear" and not any(c in chosen for c in TOPS + ("dress",)):
        put(pick(TOPS))
    if fc != "outerwear" and rng.random() < outer_p:
        put(pick(("outerwear",)))
    if fc != "shoes" and rng.random() < shoes_p:
        put(pick(("shoes",)))
    if fc != "bag" and rng.random() < bag_p:
        put(pick(("bag",)))
    if fc != "hat" and rng.random() < hat_p:
        put(pick(("hat",)))
    return sorted(chosen.values(), key=lambda p: (LAYER[p["category"]], p["category"]))


# --------------------------------------------------------------------------- scenes


def render_shop(prod: dict, size: tuple[int, int], rng: np.random.Generator) -> Rendered:
    """Product shot: the garment alone in the flat pose, centred on a light backdrop."""
    w, h = size
    cv = Canvas(studio_background(w, h, rng))
    parts = garment_parts(prod["category"], prod["attributes"], prod["render"])
    pts = np.concatenate([_apply(_FLAT_FRAMES[p.frame], p.poly) for p in parts])
    lo, hi = pts.min(0), pts.max(0)
    span = np.maximum(hi - lo, 1e-6)
    s = float(rng.uniform(0.74, 0.86)) * min(w / span[0], h / span[1])
    c = (lo + hi) / 2
    G = similarity(s, w / 2 - s * c[0] + rng.uniform(-4, 4), h / 2 - s * c[1] + rng.uniform(-4, 4))
    # soft drop shadow of the silhouette
    sil = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(sil)
    off = np.array([rng.uniform(2, 7), rng.uniform(3, 9)])
    for p in parts:
        d.polygon([tuple(q) for q in _apply(G @ _FLAT_FRAMES[p.frame], p.poly) + off], fill=255)
    sh = np.asarray(sil.filter(ImageFilter.GaussianBlur(max(2.0, w / 50))), np.float32) / 255.0
    cv.rgb *= (1 - 0.25 * sh)[:, :, None]
    _draw_parts(
        cv, _FLAT_FRAMES, G, parts, product_paint(prod["render"]), lambda p: TAXONOMY.parsing_class(prod["category"]), 1
    )
    img = photometric(cv.rgb, rng, 0.12)
    anns = extract_annotations(cv, {1: prod})
    return Rendered(
        "shop", prod["product_id"], w, h, to_jpeg(img, 92), to_png_labels(cv.label, TAXONOMY.parsing_palette), anns
    )


def render_model(
    prod: dict, k: int, pools: dict[str, list[dict]], size: tuple[int, int], rng: np.random.Generator
) -> Rendered:
    """Worn shot: one figure on a studio backdrop wearing the product plus an outfit."""
    w, h = size
    cv = Canvas(studio_background(w, h, rng, light=rng.random() < 0.6))
    # keep the product clearly visible: no coat over a top, no bag unless it is the product
    outfit = sample_outfit(rng, pools, prod, outer_p=0.0, bag_p=0.0, hat_p=0.25)
    fh = h * float(rng.uniform(0.84, 0.95))
    bottom = h * float(rng.uniform(0.95, 1.0))
    G = similarity(fh, w / 2 + w * rng.uniform(-0.07, 0.07), bottom - fh, float(rng.uniform(-0.05, 0.05)), (0.0, 0.5))
    worn = {i + 1: p for i, p in enumerate(outfit)}
    draw_figure(cv, G, sample_body(rng), sample_pose(rng, wild=False), [(p, i) for i, p in worn.items()])
    img = photometric(cv.rgb, rng, 0.35)
    anns = extract_annotations(cv, worn)
    q = int(rng.integers(75, 93))
    return Rendered(
        "model",
        f"{prod['product_id']}_{k}",
        w,
        h,
        to_jpeg(img, q, float(rng.uniform(0, 0.5))),
        to_png_labels(cv.label, TAXONOMY.parsing_palette),
        anns,
    )


def _occluder(cv: Canvas, rng: np.random.Generator) -> None:
    """A foreground object (pole, box, car, bush) that hides parts of figures."""
    w, h = cv.w, cv.h
    kind = rng.integers(4)
    col = np.asarray([float(v) for v in rng.integers(30, 220, 3)], np.float32)

    def paint(key: str, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
        return np.broadcast_to(col, (len(gx), 3)) * (1 + 0.06 * np.sin(gy * 0.3))[:, None]

    cx = rng.uniform(0, w)
    if kind == 0:  # pole
        pw = rng.uniform(0.02, 0.05) * w
        top = rng.uniform(0, 0.4) * h
        poly = [(cx - pw, top), (cx + pw, top), (cx + pw, h), (cx - pw, h)]
    elif kind == 1:  # box / bin
        bw, bh = rng.uniform(0.1, 0.3) * w, rng.uniform(0.15, 0.4) * h
        poly = [(cx - bw, h - bh), (cx + bw, h - bh), (cx + bw, h), (cx - bw, h)]
    elif kind == 2:  # car-ish
        bw, bh = rng.uniform(0.25, 0.45) * w, rng.uniform(0.18, 0.32) * h
        poly = [
            (cx - bw, h),
            (cx - bw, h - bh * 0.6),
            (cx - bw * 0.5, h - bh),
            (cx + bw * 0.4, h - bh),
            (cx + bw, h - bh * 0.55),
            (cx + bw, h),
        ]
    else:  # bush
        r = rng.uniform(0.1, 0.22) * w
        poly = [
            (
                cx + r * math.cos(a) * (1 + 0.2 * math.sin(5 * a)),
                h - r * 0.5 + r * 0.8 * math.sin(a) * (1 + 0.2 * math.cos(7 * a)),
            )
            for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)
        ]
    arr = np.asarray(poly, np.float64)
    cv.draw(arr, np.eye(3), np.eye(3), paint, "main", 0, 0, 0.0)


def render_street(
    idx: int, pools: dict[str, list[dict]], size: tuple[int, int], figures: tuple[int, int], rng: np.random.Generator
) -> Rendered:
    """Street scene: cluttered background, 1..n dressed figures, occluders, bad lighting."""
    w, h = size
    bg, horizon = street_background(w, h, rng)
    cv = Canvas(bg)
    nfig = int(rng.integers(figures[0], figures[1] + 1))
    heights = sorted(float(rng.uniform(0.35, 0.95)) for _ in range(nfig))  # far first
    worn_all: dict[int, dict] = {}
    inst = 0
    for fr in heights:
        fh = fr * h
        # perspective: bigger (closer) figures stand lower; the closest get cut by the border
        t = (fr - 0.35) / 0.6
        foot = horizon + (0.25 + 0.75 * t) * (h * 1.1 - horizon) + rng.uniform(-0.04, 0.04) * h
        cx = float(rng.uniform(-0.05, 1.05)) * w
        G = similarity(fh, cx, foot - fh, float(rng.uniform(-0.12, 0.12)), (0.0, 0.5))
        outfit = sample_outfit(rng, pools)
        worn = []
        for p in outfit:
            inst += 1
            worn_all[inst] = p
            worn.append((p, inst))
        draw_figure(cv, G, sample_body(rng), sample_pose(rng, wild=True), worn)
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 3))):
            _occluder(cv, rng)
    img = photometric(cv.rgb, rng, 1.0)
    anns = extract_annotations(cv, worn_all)
    blur = float(rng.uniform(0.3, 1.6)) if rng.random() < 0.5 else 0.0
    q = int(rng.integers(40, 91))
    return Rendered(
        "street", f"s{idx:05d}", w, h, to_jpeg(img, q, blur), to_png_labels(cv.label, TAXONOMY.parsing_palette), anns
    )
