"""Invariants of the synthetic fashion world (pipelines.synth) on a small world."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pipelines.synth import (
    TAXONOMY,
    WorldConfig,
    build_catalog,
    file_hashes,
    generate_world,
    load_products,
    preview,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(tmp_path_factory.mktemp("synth") / "world", WorldConfig.small())


@pytest.fixture(scope="module")
def coco(world: Path) -> dict:
    return json.loads((world / "annotations" / "coco.json").read_text())


def test_layout_and_counts(world: Path, coco: dict) -> None:
    meta = json.loads((world / "world.json").read_text())
    assert meta["format"] == 1
    assert "workers" not in meta["config"]
    c = meta["counts"]
    assert c["products"] == 40 and c["street"] == 30
    assert c["shop"] == 40 and 40 <= c["model"] <= 80
    assert len(coco["images"]) == c["shop"] + c["model"] + c["street"]
    assert c["annotations"] == len(coco["annotations"]) > len(coco["images"])
    assert [cat["name"] for cat in coco["categories"]] == list(TAXONOMY.categories)
    assert [cat["id"] for cat in coco["categories"]] == list(range(1, len(TAXONOMY.categories) + 1))
    assert coco["parsing_classes"][:3] == ["background", "skin", "hair"]
    for im in coco["images"]:
        assert (world / im["file_name"]).is_file()
        stem = Path(im["file_name"]).stem
        assert (world / "parsing" / im["role"] / f"{stem}.png").is_file()
    text = (world / "world.json").read_text() + (world / "products.jsonl").read_text()
    assert str(world) not in text


def test_boxes_masks_and_parsing_agree(world: Path, coco: dict) -> None:
    images = {im["id"]: im for im in coco["images"]}
    parsing: dict[int, np.ndarray] = {}
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= im["width"] and y + h <= im["height"]
        assert w >= 4 and h >= 4 and 0.1 <= a["visible_fraction"] <= 1.0
        assert a["iscrowd"] == 0
        m = mask_utils.decode(a["segmentation"])
        assert m.shape == (im["height"], im["width"])
        assert int(m.sum()) == a["area"]
        bx = mask_utils.toBbox(a["segmentation"])
        assert np.allclose(bx, a["bbox"], atol=1)
        if a["image_id"] not in parsing:
            stem = Path(im["file_name"]).stem
            lab = Image.open(world / "parsing" / im["role"] / f"{stem}.png")
            assert lab.mode in ("L", "P") and lab.size == (im["width"], im["height"])
            parsing[a["image_id"]] = np.asarray(lab)
        cls = TAXONOMY.parsing_class(TAXONOMY.categories[a["category_id"] - 1])
        agree = (parsing[a["image_id"]][m.astype(bool)] == cls).mean()
        assert agree > 0.95, (im["file_name"], a["product_id"], agree)


def test_every_image_role_has_garments(coco: dict) -> None:
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    for im in coco["images"]:
        if im["role"] in ("shop", "model"):
            assert per_image[im["id"]] >= 1, im["file_name"]
    street = [im for im in coco["images"] if im["role"] == "street"]
    assert sum(per_image[im["id"]] for im in street) >= 2 * len(street)


def test_attributes_in_vocabulary(world: Path, coco: dict) -> None:
    products = load_products(world)
    assert [p["product_id"] for p in products] == sorted(p["product_id"] for p in products)
    for p in products:
        for attrs, cat in ((p["attributes"], p["category"]), (p["listed"]["attributes"], p["listed"]["category"])):
            assert cat in TAXONOMY.categories
            assert set(attrs) == set(TAXONOMY.applicable[cat]), (p["product_id"], attrs)
            for k, v in attrs.items():
                assert v in TAXONOMY.attributes[k]
        assert p["title"] and p["brand"] and p["description"]
        assert isinstance(p["price"], float) and p["price"] > 0 and round(p["price"], 2) == p["price"]
        assert p["currency"] in ("EUR", "USD", "GBP")
    for a in coco["annotations"]:
        cat = TAXONOMY.categories[a["category_id"] - 1]
        assert set(a["attributes"]) == set(TAXONOMY.applicable[cat])


def test_street_garments_are_catalogue_products(world: Path, coco: dict) -> None:
    products = {p["product_id"]: p for p in load_products(world)}
    roles = {im["id"]: im["role"] for im in coco["images"]}
    street = [a for a in coco["annotations"] if roles[a["image_id"]] == "street"]
    assert street
    for a in street:
        p = products[a["product_id"]]
        assert any(i["role"] == "shop" for i in p["images"])
        assert TAXONOMY.category_id(p["category"]) == a["category_id"]
        assert a["attributes"] == p["attributes"]
    # retrieval needs repeats: some product is seen in several street scenes
    assert Counter(a["product_id"] for a in street).most_common(1)[0][1] >= 2


def test_near_duplicates_share_look(world: Path) -> None:
    products = {p["product_id"]: p for p in load_products(world)}
    dups = [p for p in products.values() if p["near_duplicate_of"]]
    assert dups
    for p in dups:
        src = products[p["near_duplicate_of"]]
        assert src["category"] == p["category"]
        assert src["attributes"]["color"] == p["attributes"]["color"]
        assert src["attributes"]["pattern"] == p["attributes"]["pattern"]


def test_long_tail_default_catalog() -> None:
    products, _ = build_catalog(WorldConfig())
    counts = Counter(p["category"] for p in products)
    assert set(counts) == set(TAXONOMY.categories)
    assert max(counts.values()) > 3 * min(counts.values())


def test_label_noise_logged(world: Path) -> None:
    cfg = WorldConfig.small()
    products = {p["product_id"]: p for p in load_products(world)}
    noise = json.loads((world / "noise.json").read_text())
    assert len(noise) == round(cfg.label_noise * cfg.n_products)
    flipped = set()
    for n in noise:
        p = products[n["product_id"]]
        if n["field"] == "category":
            assert p["category"] == n["true"] and p["listed"]["category"] == n["listed"] != n["true"]
        else:
            attr = n["field"].split(".", 1)[1]
            assert p["attributes"][attr] == n["true"] and p["listed"]["attributes"][attr] == n["listed"] != n["true"]
        flipped.add(p["product_id"])
    for pid, p in products.items():
        if pid not in flipped:
            assert p["listed"] == {"category": p["category"], "attributes": p["attributes"]}


def test_broken_files_really_broken(world: Path, coco: dict) -> None:
    cfg = WorldConfig.small()
    broken = json.loads((world / "broken.json").read_text())
    n_files = sum(im["role"] in ("shop", "model") for im in coco["images"])
    assert len(broken) == round(cfg.broken_rate * n_files)
    assert {b["kind"] for b in broken} <= {"truncated", "wrong_extension", "zero_bytes"}
    shop_broken = [b for b in broken if b["file"].startswith("images/shop/")]
    assert len(shop_broken) <= cfg.broken_rate * cfg.n_products
    listed = {im["file_name"] for im in coco["images"]}
    for b in broken:
        assert b["file"].startswith(("images/shop/", "images/model/")) and b["file"] in listed
        path = world / b["file"]
        if b["kind"] == "wrong_extension":
            # decodable, but the bytes are PNG under a .jpg name: a content-type check must catch it
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            continue
        with pytest.raises(Exception):  # noqa: B017 - PIL raises OSError / UnidentifiedImageError
            with Image.open(path) as im:
                im.load()
    # everything not listed decodes
    bad = {b["file"] for b in broken}
    for im in coco["images"][:60]:
        if im["file_name"] not in bad:
            with Image.open(world / im["file_name"]) as pil:
                pil.load()
                assert pil.format == "JPEG" and pil.size == (im["width"], im["height"])


def test_deterministic_and_worker_independent(world: Path, tmp_path: Path) -> None:
    other = generate_world(tmp_path / "w2", WorldConfig.small().model_copy(update={"workers": 2}))
    assert file_hashes(other) == file_hashes(world)


def test_other_seed_differs(tmp_path: Path) -> None:
    a, _ = build_catalog(WorldConfig.small(seed=0))
    b, _ = build_catalog(WorldConfig.small(seed=1))
    assert [p["render"]["rgb"] for p in a] != [p["render"]["rgb"] for p in b]


def test_refuses_foreign_directory(tmp_path: Path, world: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_world(target, WorldConfig.small())
    with pytest.raises(ValueError, match="different config"):
        generate_world(world, WorldConfig.small(seed=5))


def test_preview_png(world: Path, tmp_path: Path) -> None:
    out = preview(world, tmp_path / "sheet.png", n=8)
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.width >= 600 and im.height >= 400
        assert np.asarray(im.convert("L")).std() > 10


def test_regenerate_same_config_is_idempotent(world: Path) -> None:
    before = file_hashes(world)
    generate_world(world, WorldConfig.small().model_copy(update={"workers": 2}))
    assert file_hashes(world) == before
