"""Procedural garment textures, backgrounds and photographic degradations (numpy + PIL).

Textures are functions of garment-frame coordinates (texture units: 1 % of the figure
height in the flat pose), evaluated only at the pixels a part covers. Being procedural they
render sharp at any scale and identical on the shop shot and on a worn figure.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# ---------------------------------------------------------------------------- hashing


def _hash2(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic per-lattice-point uniform [0, 1) (integer hash, wraps in uint32)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = h.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(12)
    h = (h * np.uint64(0x297A2D39)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)


def value_noise(x: np.ndarray, y: np.ndarray, salt: int) -> np.ndarray:
    """Smooth lattice value noise in [0, 1)."""
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    a = _hash2(ix, iy, salt)
    b = _hash2(ix + 1, iy, salt)
    c = _hash2(ix, iy + 1, salt)
    d = _hash2(ix + 1, iy + 1, salt)
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


@functools.lru_cache(maxsize=512)
def text_bitmap(text: str) -> np.ndarray:
    """Bool bitmap of ``text`` in PIL's built-in font, cropped to its ink."""
    font = ImageFont.load_default(size=22)
    img = Image.new("L", (24 * len(text) + 16, 40), 0)
    ImageDraw.Draw(img).text((4, 4), text, fill=255, font=font)
    a = np.asarray(img) > 100
    ys, xs = np.nonzero(a)
    if len(xs) == 0:
        return np.zeros((4, 4), bool)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _bitmap_lookup(bm: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Nearest lookup of a bitmap at normalised coords (outside [0,1) -> False)."""
    h, w = bm.shape
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    iu = np.clip((u * w).astype(np.int64), 0, w - 1)
    iv = np.clip((v * h).astype(np.int64), 0, h - 1)
    return inside & bm[iv, iu]


# --------------------------------------------------------------------------- patterns


def pattern_rgb(p: dict, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Colour (N, 3) float32 of a product's fabric at texture coordinates (gx, gy)."""
    prim = np.asarray(p["rgb"], np.float32)
    sec = np.asarray(p["rgb2"], np.float32)
    kind = p["pattern"]
    n = gx.shape[0]
    out = np.broadcast_to(prim, (n, 3)).copy()
    ang = math.radians(p.get("angle", 0.0))
    ca, sa = math.cos(ang), math.sin(ang)
    rx = gx * ca + gy * sa
    ry = -gx * sa + gy * ca
    if kind == "stripes":
        m = np.mod(ry / p["period"], 1.0) < p["duty"]
        out[m] = sec
    elif kind == "checks":
        per, duty = p["period"], p["duty"]
        s1 = (np.mod(rx / per, 1.0) < duty).astype(np.float32)
        s2 = (np.mod(ry / per, 1.0) < duty).astype(np.float32)
        w = (0.45 * (s1 + s2))[:, None]
        out = prim * (1 - w) + sec * w
        thin = (np.abs(np.mod(rx / per + 0.5 * duty + 0.5, 1.0) - 0.5) < 0.04) | (
            np.abs(np.mod(ry / per + 0.5 * duty + 0.5, 1.0) - 0.5) < 0.04
        )
        out[thin] = np.asarray(p["rgb3"], np.float32)
    elif kind == "dots":
        sp = p["period"]
        cy = ry / sp
        row = np.floor(cy)
        cx = rx / sp + (0.5 * np.mod(row, 2) if p.get("stagger") else 0.0)
        d = np.hypot(np.mod(cx, 1.0) - 0.5, np.mod(cy, 1.0) - 0.5) * sp
        out[d < p["radius"]] = sec
    elif kind == "floral":
        c = p["period"]
        x, y = rx / c, ry / c
        ix, iy = np.floor(x), np.floor(y)
        salt = p["salt"]
        ox = 0.25 + 0.5 * _hash2(ix, iy, salt)
        oy = 0.25 + 0.5 * _hash2(ix, iy, salt + 1)
        rot = 6.28 * _hash2(ix, iy, salt + 2)
        keep = _hash2(ix, iy, salt + 3) < p["density"]
        dx, dy = x - ix - ox, y - iy - oy
        r = np.hypot(dx, dy) * c
        th = np.arctan2(dy, dx)
        rad = p["radius"]
        petal = keep & (r < rad * (0.55 + 0.45 * np.abs(np.cos(2.5 * th + rot))))
        out[petal] = sec
        out[keep & (r < rad * 0.28)] = np.asarray(p["rgb3"], np.float32)
        leaf = ~keep & (np.hypot(dx * 1.8, dy) * c < rad * 0.45)
        out[leaf] = prim * 0.6 + np.asarray((30, 90, 40), np.float32) * 0.4
    elif kind == "camo":
        s = p["period"]
        v = 0.65 * value_noise(rx / s, ry / s, p["salt"]) + 0.35 * value_noise(
            rx / (s * 0.45), ry / (s * 0.45), p["salt"] + 7
        )
        out[v > 0.42] = sec
        out[v > 0.55] = np.asarray(p["rgb3"], np.float32)
        out[v > 0.66] = prim * 0.55
    elif kind == "print":
        bm = text_bitmap(p["text"])
        h, w = bm.shape
        if p.get("chest"):
            # one big lettering on the chest (torso centre in the flat pose)
            tw = p["text_w"]
            th = tw * h / w
            u = (gx - p["text_x"] + tw / 2) / tw
            v = (gy - p["text_y"]) / th
            out[_bitmap_lookup(bm, u, v)] = sec
            m2 = (np.abs(gx - p["text_x"]) < tw * 0.55) & (np.abs(gy - p["text_y"] - th - 1.2) < 0.35)
            out[m2] = np.asarray(p["rgb3"], np.float32)
        else:
            # all-over monogram tile, staggered rows
            tw = p["period"]
            th = tw * h / w
            row = np.floor(ry / (th * 1.8))
            u = np.mod(rx / (tw * 1.5) + 0.5 * np.mod(row, 2), 1.0) * 1.5
            v = np.mod(ry / (th * 1.8), 1.0) * 1.8
            out[_bitmap_lookup(bm, u, v)] = sec
    # details (buttons, pocket) live at fixed places of the flat pose torso
    if p.get("buttons"):
        b0, bs, nb = p["buttons"]
        k = np.clip(np.round((gy - b0) / bs), 0, nb - 1)
        d = np.hypot(gx - p.get("button_x", 0.0), gy - (b0 + k * bs))
        out[d < 0.55] = np.asarray(p["rgb_trim"], np.float32)
        out[(d >= 0.55) & (d < 0.75)] *= 0.7
    if p.get("pocket"):
        x0, y0, x1, y1 = p["pocket"]
        inside = (gx > x0) & (gx < x1) & (gy > y0) & (gy < y1)
        edge = inside & ((gx < x0 + 0.3) | (gx > x1 - 0.3) | (gy < y0 + 0.3) | (gy > y1 - 0.3))
        out[edge] *= 0.72
    # fabric grain: a faint weave so flat colours are not perfectly flat
    grain = 1.0 + p.get("grain", 0.03) * np.sin(gx * 9.1 + 1.3) * np.sin(gy * 8.3)
    return out * grain[:, None].astype(np.float32)


# ------------------------------------------------------------------------ backgrounds


def studio_background(w: int, h: int, rng: np.random.Generator, light: bool = True) -> np.ndarray:
    """Plain light backdrop with a soft vertical gradient (shop and model shots)."""
    base = rng.uniform(222, 250) if light else rng.uniform(150, 225)
    tint = rng.normal(0, 4 if light else 10, 3)
    top = np.clip(base + tint, 0, 255)
    bottom = np.clip(top - rng.uniform(8, 30), 0, 255)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = top[None, None, :] * (1 - t) + bottom[None, None, :] * t
    img = np.broadcast_to(img, (h, w, 3)).astype(np.float32).copy()
    if not light or rng.random() < 0.5:
        floor = int(h * rng.uniform(0.78, 0.92))
        img[floor:] *= rng.uniform(0.85, 0.95)
    return img


def _rand_color(rng: np.random.Generator, lo: int = 30, hi: int = 230) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def street_background(w: int, h: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Cluttered outdoor scene: sky, buildings with windows, ground, shapes, stripes, noise.

    Returns the image (float32 HxWx3) and the horizon row (figures stand below it).
    """
    img = Image.new("RGB", (w, h))
    d = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.35, 0.6))
    sky0, sky1 = np.array(_rand_color(rng, 120, 250)), np.array(_rand_color(rng, 90, 240))
    for y in range(horizon):
        t = y / max(1, horizon)
        d.line([(0, y), (w, y)], fill=tuple(int(v) for v in sky0 * (1 - t) + sky1 * t))
    g0, g1 = np.array(_rand_color(rng, 40, 200)), np.array(_rand_color(rng, 40, 200))
    for y in range(horizon, h):
        t = (y - horizon) / max(1, h - horizon)
        d.line([(0, y), (w, y)], fill=tuple(int(v) for v in g0 * (1 - t) + g1 * t))
    # buildings
    x = int(rng.integers(-40, 0))
    while x < w:
        bw = int(rng.integers(w // 10, w // 3))
        top = int(rng.integers(0, max(1, horizon - 10)))
        col = _rand_color(rng, 50, 220)
        d.rectangle([x, top, x + bw, horizon + 2], fill=col)
        wc = tuple(max(0, min(255, c + int(rng.integers(-90, 60)))) for c in col)
        ws, wh = int(rng.integers(6, 16)), int(rng.integers(6, 18))
        for wy in range(top + 4, horizon - wh, wh + int(rng.integers(3, 8))):
            for wx in range(x + 3, x + bw - ws, ws + int(rng.integers(3, 8))):
                d.rectangle([wx, wy, wx + ws - 2, wy + wh - 3], fill=wc)
        x += bw + int(rng.integers(0, 20))
    # road markings / crosswalk stripes
    if rng.random() < 0.6:
        sw = int(rng.integers(6, 18))
        y0 = int(rng.integers(horizon, h))
        y1 = min(h, y0 + int(rng.integers(10, 50)))
        c = _rand_color(rng, 180, 255)
        for sx in range(0, w, 2 * sw):
            d.rectangle([sx, y0, sx + sw, y1], fill=c)
    # random clutter shapes (posters, signs, bushes)
    for _ in range(int(rng.integers(3, 12))):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(4, max(6, w // 8)))
        col = _rand_color(rng)
        k = rng.random()
        if k < 0.35:
            d.ellipse([cx - r, cy - r, cx + r, cy + r // 2], fill=col)
        elif k < 0.7:
            d.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=col)
        else:
            pts = [(cx + int(rng.integers(-r, r)), cy + int(rng.integers(-r, r))) for _ in range(3)]
            d.polygon(pts, fill=col)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(rng.uniform(2, 10))
    return arr, horizon


# ---------------------------------------------------------------------- degradations


def photometric(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness/contrast, colour cast, a lighting gradient and sensor noise.

    ``strength`` 0 keeps the image as is, 1 applies street-photo-level changes.
    """
    h, w, _ = img.shape
    c = np.float32(1 + strength * rng.uniform(-0.3, 0.25))
    b = np.float32(strength * rng.uniform(-35, 30))
    cast = (1 + strength * rng.uniform(-0.12, 0.12, 3)).astype(np.float32)
    out = (img.astype(np.float32) - 128) * c + (128 + b)
    out *= cast[None, None, :]
    ang = rng.uniform(0, 2 * math.pi)
    xs = (np.arange(w, dtype=np.float32) / w - 0.5) * np.float32(math.cos(ang))
    ys = (np.arange(h, dtype=np.float32) / h - 0.5) * np.float32(math.sin(ang))
    ramp = ys[:, None] + xs[None, :]
    out *= (1 + np.float32(strength * rng.uniform(0.0, 0.5)) * ramp)[:, :, None]
    if strength > 0:
        sigma = np.float32(strength * rng.uniform(0, 7))
        out += rng.standard_normal((h, w, 1), dtype=np.float32) * sigma
    return out


def to_jpeg(img: np.ndarray, quality: int, blur: float = 0.0) -> bytes:
    """Encode to JPEG with fixed settings (deterministic bytes)."""
    pil = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
    if blur > 0.05:
        pil = pil.filter(ImageFilter.GaussianBlur(blur))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=int(quality), optimize=False, progressive=False, subsampling=2)
    return buf.getvalue()


def to_png_labels(labels: np.ndarray, palette: tuple[tuple[int, int, int], ...]) -> bytes:
    """Encode a uint8 label map as a palette PNG (indices are the class ids)."""
    h, w = labels.shape
    pil = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    flat = [v for c in palette for v in c]
    pil.putpalette(flat + [0] * (768 - len(flat)))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()
