"""Test helpers and pytest fixtures for the demo malls.

Use from any test module or conftest with ``pytest_plugins = ["pipelines.malls.testing"]``.

Fixtures (session-scoped servers; call ``server.reset()`` if a test changes revision,
robots mode or consumes fault counters):

* ``demo_malls``   -- :class:`MallServer` over the three clean demo malls of ``small_world``;
* ``faulty_malls`` -- the same malls with every fault on;
* ``photo_mall``   -- the photo mall over ``../shared/datasets/clothing-photos`` (skips when absent);
* ``fake_world``   -- a tiny fabricated world (fast unit tests, no dependency on the generator);
* ``small_world``  -- fallback only: a conftest ``small_world`` fixture takes precedence.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pipelines.malls.faults import FaultConfig
from pipelines.malls.photos import build_photo_mall
from pipelines.malls.server import MallServer
from pipelines.malls.site import Mall, build_demo_malls

_CATEGORIES = ("dress", "top", "skirt", "trousers", "outerwear")
_COLORS = ("navy", "red", "black", "white", "green", "beige")
_PATTERNS = ("solid", "dots", "stripes", "floral", "check")


def shared_photos_dir() -> Path:
    """``<project root>/../shared/datasets/clothing-photos`` (may not exist)."""
    from pipelines.settings import PROJECT_ROOT

    return PROJECT_ROOT.parent / "shared" / "datasets" / "clothing-photos"


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
        products.append({
            "product_id": pid, "category": cat, "attributes": attrs, "listed": listed,
            "title": f"{attrs['color'].title()} {attrs['pattern']} {cat} {k}",
            "brand": rng.choice(["Acme", "Lumen", "Kestrel & Co"]),
            "price": round(rng.uniform(9, 200), 2), "currency": "EUR",
            "description": f"A {attrs['pattern']} {cat} in {attrs['color']}.",
            "images": images, "near_duplicate_of": None,
        })
    broken_files: list[dict[str, str]] = []
    if broken and n >= 3:
        f0 = directory / products[0]["images"][1]["file"]
        f0.write_bytes(f0.read_bytes()[:40])
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), "red").save(buf, "PNG")
        (directory / products[1]["images"][1]["file"]).write_bytes(buf.getvalue())
        (directory / products[2]["images"][2]["file"]).write_bytes(b"")
        broken_files = [{"file": products[0]["images"][1]["file"], "kind": "truncated"},
                        {"file": products[1]["images"][1]["file"], "kind": "png_as_jpg"},
                        {"file": products[2]["images"][2]["file"], "kind": "empty"}]
    with (directory / "products.jsonl").open("w") as fh:
        for p in products:
            fh.write(json.dumps(p) + "\n")
    meta = {"format": 1, "config": {"seed": seed, "n_products": n},
            "taxonomy": {"categories": list(_CATEGORIES), "attributes": {"color": list(_COLORS),
                                                                         "pattern": list(_PATTERNS)}},
            "counts": {"products": n}}
    (directory / "world.json").write_text(json.dumps(meta))
    (directory / "broken.json").write_text(json.dumps(broken_files))
    return directory


@contextmanager
def running_malls(malls: list[Mall], host: str = "127.0.0.1", base_port: int = 0) -> Iterator[MallServer]:
    """Serve ``malls`` on free ports for the duration of the ``with`` block."""
    server = MallServer(malls, host=host, base_port=base_port)
    with server:
        yield server


@pytest.fixture(scope="session")
def fake_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-product fabricated world (fast; independent of pipelines.synth)."""
    return make_fake_world(tmp_path_factory.mktemp("fake_world"), n=60, seed=3)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fallback: a small synthetic world from pipelines.synth (a conftest fixture wins)."""
    try:
        from pipelines.synth import WorldConfig, generate_world  # type: ignore[attr-defined]
    except ImportError as exc:
        pytest.skip(f"pipelines.synth not available yet: {exc}")
    out = tmp_path_factory.mktemp("small_world")
    result = generate_world(out, WorldConfig.small(seed=7))
    return Path(result) if isinstance(result, str | Path) else out


@pytest.fixture(scope="session")
def demo_malls(small_world: Path) -> Iterator[MallServer]:
    """The three clean demo malls of ``small_world``, running on free ports."""
    with running_malls(build_demo_malls(small_world, seed=0)) as server:
        yield server


@pytest.fixture(scope="session")
def faulty_malls(small_world: Path) -> Iterator[MallServer]:
    """The three demo malls of ``small_world`` with every fault kind on."""
    with running_malls(build_demo_malls(small_world, seed=0, faults=FaultConfig.all_on())) as server:
        yield server


@pytest.fixture(scope="session")
def photo_mall() -> Iterator[MallServer]:
    """The photo mall (all photos of the shared dataset); skips when the dataset is absent."""
    root = shared_photos_dir()
    if not (root / "labels.csv").is_file():
        pytest.skip(f"shared photo dataset not found at {root}")
    with running_malls([build_photo_mall(root)]) as server:
        yield server
