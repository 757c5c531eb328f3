"""Mall test helpers: a tiny fabricated world (fast, independent of the generator) and
malls served on free ports for the length of a ``with`` block. The session fixtures built
on them (``demo_malls``, ``faulty_malls``, ``photo_mall``, ``fake_world``) are in
``tests/conftest.py``."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.malls.server import MallServer
from pipelines.malls.site import Mall

_CATEGORIES = ("dress", "top", "skirt", "trousers", "outerwear")
_COLORS = ("navy", "red", "black", "white", "green", "beige")
_PATTERNS = ("solid", "dots", "stripes", "floral", "check")


def _jpeg(rng: random.Random, size: tuple[int, int] = (48, 64)) -> bytes:
    from PIL import Image

    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(4):  # a few blocks so images differ and compress non-trivially
        x, y = rng.randrange(size[0] - 8), rng.randrange(size[1] - 8)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 8, y + 8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def make_fake_world(directory: Path, n: int = 30, seed: int = 0, broken: bool = True) -> Path:
    """Write a tiny world in the synthetic-world format (valid JPEGs, a few broken files).

    ``broken=True`` makes three images broken like the real generator does: a truncated
    JPEG, PNG bytes named .jpg and a zero-byte file. Returns ``directory``.
    """
    from PIL import Image

    directory = Path(directory)
    rng = random.Random(seed)
    for sub in ("shop", "model", "street"):
        (directory / "images" / sub).mkdir(parents=True, exist_ok=True)
    products = []
    for k in range(n):
        pid = f"p{k:05d}"
        cat = _CATEGORIES[k % len(_CATEGORIES)]
        attrs = {"color": rng.choice(_COLORS), "pattern": rng.choice(_PATTERNS)}
        listed = {"category": cat, "attributes": dict(attrs)}
        if k % 11 == 5:  # label noise: the shop shows another colour than the truth
            listed["attributes"]["color"] = "purple"
        images = [{"file": f"images/shop/{pid}.jpg", "role": "shop"}]
        images += [{"file": f"images/model/{pid}_{j}.jpg", "role": "model"} for j in range(2)]
        for im in images:
            (directory / im["file"]).write_bytes(_jpeg(rng))
        products.append(
            {
                "product_id": pid,
                "category": cat,
                "attributes": attrs,
                "listed": listed,
                "title": f"{attrs['color'].title()} {attrs['pattern']} {cat} {k}",
                "brand": rng.choice(["Acme", "Lumen", "Kestrel & Co"]),
                "price": round(rng.uniform(9, 200), 2),
                "currency": "EUR",
                "description": f"A {attrs['pattern']} {cat} in {attrs['color']}.",
                "images": images,
                "near_duplicate_of": None,
            }
        )
    broken_files: list[dict[str, str]] = []
    if broken and n >= 3:
        f0 = directory / products[0]["images"][1]["file"]
        f0.write_bytes(f0.read_bytes()[:40])
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buf, "PNG")
        (directory / products[1]["images"][1]["file"]).write_bytes(buf.getvalue())
        (directory / products[2]["images"][2]["file"]).write_bytes(b"")
        broken_files = [
            {"file": products[0]["images"][1]["file"], "kind": "truncated"},
            {"file": products[1]["images"][1]["file"], "kind": "png_as_jpg"},
            {"file": products[2]["images"][2]["file"], "kind": "empty"},
        ]
    with (directory / "products.jsonl").open("w") as fh:
        for p in products:
            fh.write(json.dumps(p) + "\n")
    meta = {
        "format": 1,
        "config": {"seed": seed, "n_products": n},
        "taxonomy": {
            "categories": list(_CATEGORIES),
            "attributes": {"color": list(_COLORS), "pattern": list(_PATTERNS)},
        },
        "counts": {"products": n},
    }
    (directory / "world.json").write_text(json.dumps(meta))
    (directory / "broken.json").write_text(json.dumps(broken_files))
    return directory


@contextmanager
def running_malls(malls: list[Mall], host: str = "127.0.0.1", base_port: int = 0) -> Iterator[MallServer]:
    """Serve ``malls`` on free ports for the duration of the ``with`` block."""
    server = MallServer(malls, host=host, base_port=base_port)
    with server:
        yield server
