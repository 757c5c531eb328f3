"""Generate a deterministic synthetic fashion world: catalogue, images and ground truth.

Layout of a world directory::

    world.json                 format, config, taxonomy, counts
    products.jsonl             one product per line (sorted by product_id, keys sorted)
    noise.json / broken.json   injected label flips / broken image files
    annotations/coco.json      COCO detection + RLE masks for every garment in every image
    images/{shop,model,street}/*.jpg
    parsing/{shop,model,street}/*.png  palette PNG, value = parsing class id

Every random draw comes from a generator seeded by ``SeedSequence(seed, spawn_key=...)``
keyed by what is being generated (product i, model shot (i, k), scene j), so the output is
byte-identical across runs and does not depend on the number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from ._render import Rendered, render_model, render_shop, render_street
from .taxonomy import (
    ALLOWED,
    ATTRIBUTES,
    CATEGORIES,
    COLORS,
    NOISE_GROUPS,
    TAXONOMY,
)

FORMAT = 1

# spawn keys: one namespace per kind of random draw
_K_CATALOG, _K_PRODUCT, _K_SHOP, _K_MODEL, _K_STREET, _K_NOISE, _K_BROKEN = range(7)

BRANDS = (
    "Northwind",
    "Velora",
    "Kestrel & Co",
    "Mira Lane",
    "Oakhem",
    "Sundry",
    "Tova",
    "Halcyon",
    "Brisk",
    "Lumen Atelier",
    "Parcel",
    "Fjordline",
)
CURRENCIES = ("EUR", "USD", "GBP")
PRICE_RANGE = {
    "t-shirt": (9, 39),
    "shirt": (19, 79),
    "sweater": (25, 99),
    "outerwear": (49, 299),
    "dress": (25, 149),
    "skirt": (19, 89),
    "pants": (25, 119),
    "shorts": (15, 59),
    "shoes": (29, 199),
    "bag": (19, 249),
    "hat": (9, 49),
}
NOUN = {
    "t-shirt": "t-shirt",
    "shirt": "shirt",
    "sweater": "sweater",
    "outerwear": "jacket",
    "dress": "dress",
    "skirt": "skirt",
    "pants": "trousers",
    "shorts": "shorts",
    "shoes": "shoes",
    "bag": "bag",
    "hat": "hat",
}
PATTERN_ADJ = {
    "solid": "",
    "stripes": "striped",
    "checks": "checked",
    "dots": "polka-dot",
    "print": "logo-print",
    "floral": "floral",
    "camo": "camo",
}
MATERIALS = (
    "cotton",
    "organic cotton",
    "linen",
    "wool blend",
    "recycled polyester",
    "denim",
    "jersey",
    "viscose",
    "leather-look",
    "canvas",
)
COLOR_WEIGHTS = {"black": 3.0, "white": 2.5, "grey": 2.0, "navy": 2.0, "blue": 1.5, "beige": 1.5}
PATTERN_WEIGHTS: dict[str, dict[str, float]] = {
    "default": {"solid": 4, "stripes": 1.6, "checks": 1.0, "dots": 0.9, "print": 1.4, "floral": 1.0, "camo": 0.7},
    "shirt": {"solid": 3, "stripes": 2, "checks": 2.5, "dots": 0.6, "print": 0.3, "floral": 1.0, "camo": 0.3},
    "shoes": {"solid": 6, "stripes": 0.6, "checks": 0.4, "dots": 0.3, "print": 0.6, "floral": 0.3, "camo": 0.5},
    "bag": {"solid": 5, "stripes": 0.8, "checks": 0.8, "dots": 0.4, "print": 1.2, "floral": 0.4, "camo": 0.3},
    "hat": {"solid": 5, "stripes": 1.0, "checks": 0.6, "dots": 0.3, "print": 0.8, "floral": 0.2, "camo": 0.6},
}


class WorldConfig(BaseModel):
    """Everything that determines a world; ``model_dump()`` (minus ``workers``) goes into world.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    # 480: the held-out splits (10 % each) then hold ~48 products, enough to score each
    # tagger head on more than a handful of products (240 left 4 tops in val for neckline)
    n_products: int = 480
    model_shots: tuple[int, int] = (1, 2)
    n_scenes: int = 200
    figures_per_scene: tuple[int, int] = (1, 3)
    shop_size: tuple[int, int] = (256, 256)
    model_size: tuple[int, int] = (192, 256)
    scene_size: tuple[int, int] = (384, 288)
    long_tail: float = 1.1
    label_noise: float = 0.03
    broken_rate: float = 0.02
    near_duplicate_rate: float = 0.08
    workers: int = 1

    @classmethod
    def small(cls, seed: int = 0) -> WorldConfig:
        """A small world (~40 products, ~30 scenes) for fast tests."""
        return cls(seed=seed, n_products=40, n_scenes=30, label_noise=0.1, broken_rate=0.05)

    def identity(self) -> dict[str, Any]:
        """The config as stored in world.json: ``workers`` excluded (it never changes output)."""
        return self.model_dump(mode="json", exclude={"workers"})


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -------------------------------------------------------------------------- catalogue


def _category_ranks(cfg: WorldConfig) -> list[str]:
    """Categories in frequency-rank order (taxonomy order shuffled once by the seed)."""
    perm = _rng(cfg.seed, _K_CATALOG, 0).permutation(len(CATEGORIES))
    return [CATEGORIES[i] for i in perm]


def _category_quota(cfg: WorldConfig) -> dict[str, int]:
    """Products per category: n * rank^-long_tail, largest remainder, at least one each."""
    ranks = _category_ranks(cfg)
    n = cfg.n_products
    w = np.array([1.0 / (r + 1) ** cfg.long_tail for r in range(len(ranks))])
    share = w / w.sum() * n
    q = np.floor(share).astype(int)
    if n >= len(ranks):
        q = np.maximum(q, 1)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    i = 0
    while q.sum() < n:
        q[order[i % len(order)]] += 1
        i += 1
    while q.sum() > n:  # only possible through the at-least-one floor: take from the head
        j = int(np.argmax(q))
        q[j] -= 1
    return {c: int(k) for c, k in zip(ranks, q, strict=True)}


def _jitter(rgb: tuple[int, int, int] | list[int], rng: np.random.Generator, sd: float) -> list[int]:
    return [int(v) for v in np.clip(np.asarray(rgb, float) + rng.normal(0, sd, 3), 0, 255)]


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _sample_render(cat: str, pattern: str, color: str, rng: np.random.Generator) -> dict[str, Any]:
    """Per-product drawing parameters: shades, pattern geometry, cut and details."""
    others = [c for c in COLORS if c != color]
    sec_name = others[int(rng.integers(len(others)))]
    third = others[int(rng.integers(len(others)))]
    r: dict[str, Any] = {
        "pattern": pattern,
        "rgb": _jitter(COLORS[color], rng, 9),
        "rgb2": _jitter(COLORS[sec_name], rng, 12),
        "rgb3": _jitter(COLORS[third], rng, 12),
        "rgb_trim": _jitter(
            COLORS[others[int(rng.integers(len(others)))]] if rng.random() < 0.5 else COLORS[color], rng, 10
        ),
        "angle": float(rng.choice([0.0, 0.0, 90.0, 45.0, -30.0]) + rng.uniform(-4, 4)),
        "salt": int(rng.integers(1, 1_000_000)),
        "grain": float(rng.uniform(0.01, 0.06)),
        "fit": float(rng.uniform(0.98, 1.16)),
        "hem": float(rng.uniform(1.0, 1.12)),
        "sleeve_w": float(rng.uniform(1.0, 1.3)),
        "short_sleeve": float(rng.uniform(0.38, 0.6)),
        "hem_band": bool(rng.random() < 0.3),
        "flare": float(rng.uniform(0.15, 0.6)),
        "leg_w": float(rng.uniform(1.0, 1.35)),
        "open_gap": float(rng.uniform(0.08, 0.3)) if (cat == "outerwear" and rng.random() < 0.5) else 0.0,
        "side": "r" if rng.random() < 0.6 else "l",
    }
    r["style"] = {
        "shoes": ["sneaker", "boot", "heel"][int(rng.integers(3))],
        "bag": ["tote", "crossbody", "clutch"][int(rng.integers(3))],
        "hat": ["beanie", "cap", "brim"][int(rng.integers(3))],
    }.get(cat, "")
    if pattern == "stripes":
        r.update(period=float(rng.uniform(2.0, 5.5)), duty=float(rng.uniform(0.3, 0.6)))
    elif pattern == "checks":
        r.update(period=float(rng.uniform(3.0, 7.0)), duty=float(rng.uniform(0.3, 0.5)))
    elif pattern == "dots":
        sp = float(rng.uniform(2.2, 4.5))
        r.update(period=sp, radius=float(sp * rng.uniform(0.16, 0.33)), stagger=bool(rng.random() < 0.6))
    elif pattern == "floral":
        c = float(rng.uniform(3.5, 7.0))
        r.update(period=c, radius=float(c * rng.uniform(0.28, 0.42)), density=float(rng.uniform(0.45, 0.9)))
    elif pattern == "camo":
        r.update(period=float(rng.uniform(3.0, 8.0)))
    elif pattern == "print":
        letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
        r["text"] = "".join(letters[int(rng.integers(len(letters)))] for _ in range(int(rng.integers(2, 5))))
        r["chest"] = cat in ("t-shirt", "sweater", "dress", "outerwear", "shirt") and rng.random() < 0.8
        r.update(
            text_w=float(rng.uniform(7.0, 13.0)),
            text_x=float(rng.uniform(-1.5, 1.5)),
            text_y=float(rng.uniform(21.0, 26.0)),
            period=float(rng.uniform(3.0, 6.0)),
        )
    if cat == "shirt" or (cat in ("outerwear", "dress") and rng.random() < 0.6 and r["open_gap"] == 0.0):
        bs = float(rng.uniform(3.0, 4.4))
        nb = 3 if cat == "dress" else int((44.0 - 19.5) / bs) + 1
        r["buttons"] = [19.5, bs, nb]
    if cat in ("shirt", "outerwear") and rng.random() < 0.55:
        y0 = 22.0 if cat == "shirt" else 38.0
        r["pocket"] = [3.5, y0, 7.8, y0 + 4.8]
    return r


def _sample_attributes(cat: str, rng: np.random.Generator) -> dict[str, str]:
    return {a: vals[int(rng.integers(len(vals)))] for a, vals in ALLOWED[cat].items()}


def _perturb(src: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A near-duplicate's render params: same look, slightly different numbers/details."""
    r = json.loads(json.dumps(src))
    r["rgb"] = _jitter(r["rgb"], rng, 6)
    r["rgb2"] = _jitter(r["rgb2"], rng, 6)
    for k in ("period", "radius", "text_w", "fit", "sleeve_w", "leg_w", "flare", "hem"):
        if k in r:
            r[k] = float(r[k] * rng.uniform(0.88, 1.12))
    r["angle"] = float(r["angle"] + rng.uniform(-8, 8))
    r["salt"] = int(rng.integers(1, 1_000_000))
    if rng.random() < 0.5:
        r["rgb_trim"] = _jitter(r["rgb_trim"], rng, 40)
    if "pocket" in r and rng.random() < 0.5:
        del r["pocket"]
    return r


def _describe(cat: str, attrs: dict[str, str], brand: str, material: str) -> tuple[str, str]:
    words = [attrs["color"].capitalize()]
    if PATTERN_ADJ[attrs["pattern"]]:
        words.append(PATTERN_ADJ[attrs["pattern"]])
    if "neckline" in attrs and attrs["neckline"] not in ("crew",):
        words.append(attrs["neckline"])
    if "length" in attrs and cat in ("dress", "skirt"):
        words.append({"short": "mini", "knee": "midi", "long": "maxi"}[attrs["length"]])
    if "sleeve" in attrs and cat in ("t-shirt", "dress") and attrs["sleeve"] != "short":
        words.append(attrs["sleeve"] + ("-sleeve" if attrs["sleeve"] == "long" else ""))
    title = " ".join(words + [NOUN[cat]])
    bits = [f"{title} by {brand}, made from {material}."]
    if "sleeve" in attrs:
        bits.append(f"{attrs['sleeve'].capitalize()} sleeves.")
    if "length" in attrs:
        bits.append(f"{attrs['length'].capitalize()} length.")
    bits.append("Machine washable." if material not in ("leather-look", "wool blend") else "Dry clean only.")
    return title, " ".join(bits)


def build_catalog(cfg: WorldConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Products (ground truth, render params, noisy listing, text) and the noise log."""
    quota = _category_quota(cfg)
    crng = _rng(cfg.seed, _K_CATALOG, 1)
    cats = [c for c in CATEGORIES for _ in range(quota[c])]
    crng.shuffle(cats)
    n = cfg.n_products
    n_dup = int(round(cfg.near_duplicate_rate * n))
    dups = (
        set(int(i) for i in crng.choice(np.arange(1, n), size=min(n_dup, max(0, n - 1)), replace=False))
        if n > 1
        else set()
    )
    products: list[dict[str, Any]] = []
    for i, cat in enumerate(cats):
        rng = _rng(cfg.seed, _K_PRODUCT, i)
        pid = f"p{i:05d}"
        sources = [p for p in products if p["category"] == cat and p["near_duplicate_of"] is None]
        if i in dups and sources:
            src = sources[int(rng.integers(len(sources)))]
            attrs = dict(src["attributes"])
            render = _perturb(src["render"], rng)
            dup_of = src["product_id"]
        else:
            color = _pick(rng, {c: COLOR_WEIGHTS.get(c, 1.0) for c in COLORS})
            pattern = _pick(rng, PATTERN_WEIGHTS.get(cat, PATTERN_WEIGHTS["default"]))
            attrs = {"color": color, "pattern": pattern, **_sample_attributes(cat, rng)}
            render = _sample_render(cat, pattern, color, rng)
            dup_of = None
        lo, hi = PRICE_RANGE[cat]
        cur = CURRENCIES[int(rng.choice(3, p=[0.5, 0.3, 0.2]))]
        products.append(
            {
                "product_id": pid,
                "category": cat,
                "attributes": attrs,
                "render": render,
                "brand": BRANDS[int(rng.integers(len(BRANDS)))],
                "material": MATERIALS[int(rng.integers(len(MATERIALS)))],
                "price": round(float(rng.uniform(lo, hi)) // 1 + float(rng.choice([0.0, 0.5, 0.95, 0.99])), 2),
                "currency": cur,
                "n_model": int(rng.integers(cfg.model_shots[0], cfg.model_shots[1] + 1)),
                "near_duplicate_of": dup_of,
            }
        )
    noise = _inject_noise(cfg, products)
    for p in products:
        listed = p["listed"]
        p["title"], p["description"] = _describe(listed["category"], listed["attributes"], p["brand"], p["material"])
    return products, noise


def _inject_noise(cfg: WorldConfig, products: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flip the listed category or one listed attribute of ``label_noise`` of the products."""
    rng = _rng(cfg.seed, _K_NOISE)
    n = len(products)
    k = int(round(cfg.label_noise * n))
    chosen = set(int(i) for i in rng.choice(n, size=min(k, n), replace=False)) if k else set()
    noise: list[dict[str, Any]] = []
    for i, p in enumerate(products):
        p["listed"] = {"category": p["category"], "attributes": dict(p["attributes"])}
        if i not in chosen:
            continue
        group = next(g for g in NOISE_GROUPS if p["category"] in g)
        if rng.random() < 0.4 and len(group) > 1:
            alt = [c for c in group if c != p["category"]]
            new = alt[int(rng.integers(len(alt)))]
            p["listed"]["category"] = new
            noise.append({"product_id": p["product_id"], "field": "category", "true": p["category"], "listed": new})
        else:
            attr = sorted(p["attributes"])[int(rng.integers(len(p["attributes"])))]
            vocab = ALLOWED[p["category"]].get(attr) or ATTRIBUTES[attr]
            if len(vocab) < 2:
                vocab = ATTRIBUTES[attr]
            alt = [v for v in vocab if v != p["attributes"][attr]]
            new = alt[int(rng.integers(len(alt)))]
            p["listed"]["attributes"][attr] = new
            noise.append(
                {
                    "product_id": p["product_id"],
                    "field": f"attributes.{attr}",
                    "true": p["attributes"][attr],
                    "listed": new,
                }
            )
    return noise


# ------------------------------------------------------------------------------ jobs

_STATE: dict[str, Any] = {}


def _init_worker(cfg_json: str, products: list[dict[str, Any]]) -> None:
    cfg = WorldConfig.model_validate_json(cfg_json)
    pools: dict[str, list[dict]] = {}
    for p in products:
        pools.setdefault(p["category"], []).append(p)
    _STATE.update(cfg=cfg, products=products, pools=pools)


def _run_job(job: tuple[str, int, int]) -> Rendered:
    cfg: WorldConfig = _STATE["cfg"]
    kind, i, k = job
    if kind == "shop":
        return render_shop(_STATE["products"][i], cfg.shop_size, _rng(cfg.seed, _K_SHOP, i))
    if kind == "model":
        return render_model(_STATE["products"][i], k, _STATE["pools"], cfg.model_size, _rng(cfg.seed, _K_MODEL, i, k))
    return render_street(i, _STATE["pools"], cfg.scene_size, cfg.figures_per_scene, _rng(cfg.seed, _K_STREET, i))


def _jobs(cfg: WorldConfig, products: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    jobs: list[tuple[str, int, int]] = [("shop", i, 0) for i in range(len(products))]
    jobs += [("model", i, k) for i, p in enumerate(products) for k in range(p["n_model"])]
    jobs += [("street", j, 0) for j in range(cfg.n_scenes)]
    return jobs


def _render_all(
    cfg: WorldConfig, products: list[dict[str, Any]], jobs: list[tuple[str, int, int]]
) -> Iterator[Rendered]:
    if cfg.workers <= 1:
        _init_worker(cfg.model_dump_json(), products)
        for j in jobs:
            yield _run_job(j)
        return
    # fork is much cheaper than spawn on Linux; workers only read module state
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg.model_dump_json(), products)) as pool:
        yield from pool.imap(_run_job, jobs, chunksize=4)


# ------------------------------------------------------------------------ corruption


def _corrupt(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "zero_bytes":
        return b""
    if kind == "truncated":
        return data[: int(len(data) * rng.uniform(0.3, 0.7))]
    # wrong_extension: the same picture as PNG bytes under a .jpg name
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _plan_broken(cfg: WorldConfig, files: list[str]) -> dict[str, str]:
    """Pick broken product files; at most ``broken_rate`` of the products lose their shop shot."""
    rng = _rng(cfg.seed, _K_BROKEN)
    n = int(round(cfg.broken_rate * len(files)))
    if n == 0:
        return {}
    n_shop_max = int(math.floor(cfg.broken_rate * sum(f.startswith("images/shop/") for f in files)))
    out: dict[str, str] = {}
    for idx in rng.permutation(len(files)):
        f = files[int(idx)]
        if f.startswith("images/shop/") and sum(x.startswith("images/shop/") for x in out) >= n_shop_max:
            continue
        out[f] = ("truncated", "wrong_extension", "zero_bytes")[len(out) % 3]
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------------------- public


def _check_target(out: Path, cfg: WorldConfig) -> None:
    if not out.exists() or not any(out.iterdir()):
        return
    meta = out / "world.json"
    if meta.is_file():
        try:
            stored = json.loads(meta.read_text())
        except (OSError, ValueError):
            stored = {}
        if stored.get("format") == FORMAT and stored.get("config") == cfg.identity():
            return  # regenerating the same world over itself is idempotent
        raise ValueError(f"{out} holds a world of a different config; pick an empty directory")
    raise ValueError(f"{out} exists, is not empty and is not a synthetic world; refusing to write into it")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate_world(out: Path, config: WorldConfig) -> Path:
    """Generate the world described by ``config`` into ``out`` and return ``out``.

    Raises ValueError if ``out`` is non-empty and not a world of the same config.
    """
    out = Path(out)
    cfg = config
    _check_target(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    products, noise = build_catalog(cfg)
    jobs = _jobs(cfg, products)
    files = [f"images/shop/{p['product_id']}.jpg" for p in products]
    files += [f"images/model/{p['product_id']}_{k}.jpg" for p in products for k in range(p["n_model"])]
    broken = _plan_broken(cfg, files)
    brng = _rng(cfg.seed, _K_BROKEN, 1)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="synth world", unit="img", file=sys.stderr, disable=None)
    for img_id, r in enumerate(_render_all(cfg, products, jobs), start=1):
        rel = f"images/{r.role}/{r.stem}.jpg"
        data = r.jpeg
        if rel in broken:
            data = _corrupt(data, broken[rel], brng)
        _write(out / rel, data)
        _write(out / f"parsing/{r.role}/{r.stem}.png", r.png)
        images.append({"id": img_id, "file_name": rel, "width": r.width, "height": r.height, "role": r.role})
        for a in r.anns:
            anns.append({"id": len(anns) + 1, "image_id": img_id, **a})
        bar.update(1)
    bar.close()
    coco = {
        "info": {"description": "Tailor synthetic fashion world", "version": FORMAT, "seed": cfg.seed},
        "images": images,
        "annotations": anns,
        "categories": TAXONOMY.coco_categories(),
        "parsing_classes": list(TAXONOMY.parsing_classes),
    }
    _write(out / "annotations/coco.json", _dumps(coco).encode())
    lines = []
    for p in products:
        pid = p["product_id"]
        imgs = [{"file": f"images/shop/{pid}.jpg", "role": "shop"}]
        imgs += [{"file": f"images/model/{pid}_{k}.jpg", "role": "model"} for k in range(p["n_model"])]
        rec = {
            "product_id": pid,
            "category": p["category"],
            "attributes": p["attributes"],
            "listed": p["listed"],
            "title": p["title"],
            "brand": p["brand"],
            "price": p["price"],
            "currency": p["currency"],
            "description": p["description"],
            "images": imgs,
            "near_duplicate_of": p["near_duplicate_of"],
            "colors_rgb": {"primary": p["render"]["rgb"], "secondary": p["render"]["rgb2"]},
        }
        lines.append(_dumps(rec))
    _write(out / "products.jsonl", ("\n".join(lines) + "\n").encode())
    _write(out / "noise.json", _dumps(noise).encode())
    _write(out / "broken.json", _dumps([{"file": f, "kind": k} for f, k in sorted(broken.items())]).encode())
    counts = {
        "products": len(products),
        "shop": sum(i["role"] == "shop" for i in images),
        "model": sum(i["role"] == "model" for i in images),
        "street": sum(i["role"] == "street" for i in images),
        "annotations": len(anns),
        "broken": len(broken),
        "noisy": len(noise),
    }
    meta = {"format": FORMAT, "config": cfg.identity(), "taxonomy": TAXONOMY.to_dict(), "counts": counts}
    _write(out / "world.json", _dumps(meta).encode())
    return out


def load_products(world: Path) -> list[dict[str, Any]]:
    """Read ``products.jsonl`` of a generated world."""
    with open(Path(world) / "products.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def file_hashes(world: Path) -> dict[str, str]:
    """sha256 of every file in a world (relative path -> hex), for determinism checks."""
    root = Path(world)
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return dict(sorted(out.items()))


def benchmark(out_dir: Path, config: WorldConfig) -> dict[str, float]:
    """Time :func:`generate_world` into ``out_dir``; returns images, seconds, images_per_s."""
    t0 = time.perf_counter()
    generate_world(Path(out_dir), config)
    dt = time.perf_counter() - t0
    meta = json.loads((Path(out_dir) / "world.json").read_text())
    c = meta["counts"]
    n = c["shop"] + c["model"] + c["street"]
    return {"images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 2)}
