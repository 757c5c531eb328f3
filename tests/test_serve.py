"""Search service: input validation (bentos/_io.py) and the API in-process (no server).

The bundle is made of freshly initialised, seeded models and a flat index over the small
world's catalog: real components with meaningless weights. Retrieval of a product's own
shop image still works because the index stores that image's own embedding.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bentos._io import BadInput, Limits, decode_image, parse_category, parse_k
from tests.helpers.serving import jpeg, png_bomb

# --------------------------------------------------------------------------- _io
LIMITS = Limits(max_bytes=200_000, max_pixels=2_000_000)


def test_decode_valid_jpeg_and_png():
    assert decode_image(jpeg(), LIMITS).size == (120, 90)
    buf = io.BytesIO()
    Image.new("RGBA", (50, 40)).save(buf, "PNG")
    img = decode_image(buf.getvalue(), LIMITS)
    assert img.mode == "RGB" and img.size == (50, 40)


@pytest.mark.parametrize(
    "data,status,code",
    [
        (None, 422, "missing_field"),
        (b"", 400, "empty_image"),
        (b"definitely not an image", 400, "not_an_image"),
        (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", 400, "pickle_rejected"),
        (jpeg((400, 400))[:700], 400, "corrupt_image"),
        (png_bomb(), 413, "decompression_bomb"),
        (jpeg((2000, 1200)), 413, "too_many_pixels"),
        (jpeg((4, 4)), 400, "too_small"),
    ],
)
def test_decode_rejects(data, status, code):
    with pytest.raises(BadInput) as e:
        decode_image(data, LIMITS)
    assert (e.value.status, e.value.code) == (status, code)
    assert e.value.message


def test_decode_rejects_over_byte_limit():
    with pytest.raises(BadInput) as e:
        decode_image(jpeg(), Limits(max_bytes=100))
    assert e.value.status == 413 and "limit" in e.value.message


def test_disallowed_format_is_not_an_image():
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "TIFF")
    with pytest.raises(BadInput) as e:
        decode_image(buf.getvalue(), LIMITS)
    assert e.value.code == "not_an_image"


def test_parse_k_and_category():
    assert parse_k(None) == 10 and parse_k("7") == 7
    for bad in ("0", "101", "x", "2.5"):
        with pytest.raises(BadInput) as e:
            parse_k(bad)
        assert e.value.status == 422 and e.value.field == "k"
    assert parse_category("", ("shirt",)) is None
    assert parse_category("Shirt", ("shirt",)) == "shirt"
    with pytest.raises(BadInput):
        parse_category("spaceship", ("shirt",))


# --------------------------------------------------------------------------- API in-process
@pytest.fixture(scope="module")
def client(serve_bundle: Path):
    import torch
    from fastapi.testclient import TestClient

    from bentos._io import load_config
    from bentos.api import build_app
    from bentos.engine import Bundle, SearchEngine

    torch.set_num_threads(2)
    engine = SearchEngine(Bundle.load(serve_bundle))
    cfg = load_config()
    cfg = {**cfg, "limits": {**cfg["limits"], "max_bytes": 300_000, "max_pixels": 4_000_000}}
    app = build_app(lambda: engine, cfg, catalog_images=serve_bundle / "index" / "images")
    with TestClient(app) as c:
        yield c


def test_search_own_product_image_in_top5(client, small_world: Path, serve_bundle: Path):
    pid = "p00004"
    data = (small_world / "images" / "shop" / f"{pid}.jpg").read_bytes()
    r = client.post("/search", files={"image": ("p.jpg", data, "image/jpeg")}, data={"k": "5"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["versions"]) == {"detector", "parser", "tagger", "embedder", "index"}
    assert body["versions"]["embedder"] == "fresh-s0"
    assert len(body["garments"]) >= 1
    scores = [g["score"] for g in body["garments"]]
    assert scores == sorted(scores, reverse=True)
    g = body["garments"][0]
    assert len(g["box"]) == 4 and isinstance(g["category"], str)
    assert set(g["mask"]) == {"size", "counts"} and g["mask"]["size"] == [256, 256]
    assert all(set(t) == {"value", "score"} for t in g["tags"].values()) and "color" in g["tags"]
    ids = [m["product_id"] for m in g["matches"]]
    assert len(ids) == 5 and pid in ids
    m = g["matches"][0]
    assert {"product_id", "title", "mall", "url", "image_url", "price", "currency", "category", "score"} <= set(m)
    assert "total" in body["timings_ms"]
    # the product thumbnails the demo page shows are served from the bundle
    assert client.get(m["image_url"]).status_code == 200


def test_search_category_filter_and_k(client, small_world: Path):
    data = (small_world / "images" / "shop" / "p00001.jpg").read_bytes()
    r = client.post("/search", files={"image": ("p.jpg", data, "image/jpeg")}, data={"k": "3", "category": "shoes"})
    assert r.status_code == 200, r.text
    garments = r.json()["garments"]
    assert garments  # a photo always has at least one garment (the whole photo at worst)
    from pipelines.synth import load_products

    shoes = sum(
        1 for p in load_products(small_world) if ((p.get("listed") or {}).get("category") or p["category"]) == "shoes"
    )
    for g in garments:
        assert len(g["matches"]) == min(3, shoes) > 0
        assert all(m["category"] == "shoes" for m in g["matches"])


def test_health_ready_info_openapi_demo(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["status"] == "ready"
    info = client.get("/info").json()
    assert info["limits"]["k_max"] == 100 and "shirt" in info["categories"]
    spec = client.get("/openapi.json").json()
    assert (
        "/search" in spec["paths"]
        and "multipart/form-data" in spec["paths"]["/search"]["post"]["requestBody"]["content"]
    )
    page = client.get("/demo")
    assert page.status_code == 200 and "Tailor" in page.text
    assert client.get("/static/app.js").status_code == 200


def _post(client, files=None, data=None, **kw):
    return client.post("/search", files=files, data=data, **kw)


@pytest.mark.parametrize(
    "case,status,code",
    [
        ("not_an_image", 400, "not_an_image"),
        ("truncated", 400, "corrupt_image"),
        ("bomb", 413, "decompression_bomb"),
        ("too_many_pixels", 413, "too_many_pixels"),
        ("too_many_bytes", 413, "too_large"),
        ("extreme_aspect", 400, "extreme_aspect"),
        ("missing_image", 422, "missing_field"),
        ("image_as_text", 422, "invalid_image"),
        ("k_zero", 422, "invalid_k"),
        ("k_too_big", 422, "invalid_k"),
        ("k_not_int", 422, "invalid_k"),
        ("bad_category", 422, "invalid_category"),
        ("pickle_type", 415, "pickle_rejected"),
        ("json_body", 415, "unsupported_media_type"),
    ],
)
def test_bad_input_is_4xx_json(client, case, status, code):
    ok = jpeg()
    if case == "json_body":
        r = client.post("/search", json={"image": "x", "k": 3})
    elif case == "pickle_type":
        r = client.post(
            "/search", content=b"\x80\x04K\x01.", headers={"content-type": "application/vnd.bentoml+pickle"}
        )
    else:
        files = {
            "not_an_image": {"image": ("a.jpg", b"GIF89 nope", "image/jpeg")},
            "truncated": {"image": ("a.jpg", jpeg((300, 300))[:500], "image/jpeg")},
            "bomb": {"image": ("a.png", png_bomb(), "image/png")},
            "too_many_pixels": {"image": ("a.jpg", jpeg((2500, 2000)), "image/jpeg")},
            "too_many_bytes": {"image": ("a.bin", b"\xff" * 500_000, "image/jpeg")},
            "extreme_aspect": {"image": ("a.jpg", jpeg((2200, 200)), "image/jpeg")},
            "missing_image": {"other": ("a.jpg", ok, "image/jpeg")},
        }.get(case, {"image": ("a.jpg", ok, "image/jpeg")})
        data = {
            "k_zero": {"k": "0"},
            "k_too_big": {"k": "101"},
            "k_not_int": {"k": "ten"},
            "bad_category": {"category": "spaceship"},
            "image_as_text": {"image": "http://127.0.0.1:1/x.jpg"},
        }.get(case)
        if case == "image_as_text":
            files = {"dummy": ("d.txt", b"x", "text/plain")}
        r = _post(client, files=files, data=data)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]


# --------------------------------------------------------------------------- crop policy
def test_select_garments_thresholds_clips_sorts_and_caps():
    from pipelines.garments import catalog_crop, select_garments

    det = {
        "boxes": [[-5, 10, 50, 60], [10, 10, 11, 80], [0, 0, 30, 30], [5, 5, 90, 95]],
        "scores": [0.9, 0.95, 0.2, 0.6],
        "categories": ["top", "skirt", "hat", "dress"],
    }
    out = select_garments(det, 80, 100, score_min=0.3, max_garments=8)
    # the 1-px-wide box is dropped, the 0.2 box is under the threshold, boxes are clipped
    assert [g["category"] for g in out] == ["top", "dress"]
    assert out[0]["box"] == [0.0, 10.0, 50.0, 60.0] and out[1]["box"] == [5.0, 5.0, 80.0, 95.0]
    assert len(select_garments(det, 80, 100, 0.3, 1)) == 1
    img = Image.new("RGB", (80, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 10, 50, 60))  # the "top" box is blue
    crop = catalog_crop(img, det, 0.3, 32, 0.0)
    assert crop.shape == (32, 32, 3) and tuple(crop[16, 16]) == (0, 0, 255)
    whole = catalog_crop(img, {"boxes": [], "scores": [], "categories": []}, 0.3, 32, 0.0)
    # nothing detected: the whole image (red with its blue top), not the top alone
    assert (whole == (255, 0, 0)).all(-1).sum() > 100 and (whole == (0, 0, 255)).all(-1).any()


def test_catalog_image_as_query_finds_itself_through_detected_crops(
    serve_bundle: Path, small_world: Path, tmp_path: Path
):
    """The index embeds the crop the service would cut from the same photo: with a detector
    that fires (thresholds at 0 on the untrained one), each shop photo's best match is itself
    with cosine ~1, although the crop is not the whole image."""
    import torch

    from bentos.engine import Bundle, SearchEngine
    from pipelines.index import flat

    torch.set_num_threads(2)
    bundle = Bundle.load(serve_bundle)
    bundle.detector.score_thresh = 0.0  # torchvision RetinaNet's own pre-filter
    bundle.detector.tailor_config["predict_score_thresh"] = 0.0
    products, images = flat.world_catalog(small_world)
    products = products[:12]
    bundle.index = flat.load_index(
        flat.build_flat_index(
            bundle.embedder, products, images, tmp_path / "ix", "t", detector=bundle.detector, score_min=0.0
        )
    )
    engine = SearchEngine(bundle, score_min=0.0, max_garments=2)
    for p in products[:3]:
        with Image.open(images[p["product_id"]]) as im:
            img = im.convert("RGB")
        res = engine.search(img, k=3)
        top = res["garments"][0]
        assert not res["fallback_whole_image"]
        assert top["box"] != [0.0, 0.0, float(img.size[0]), float(img.size[1])]
        assert top["matches"][0]["product_id"] == p["product_id"]
        assert top["matches"][0]["score"] > 0.999


def test_catalog_photo_is_recognised_whole_when_its_garments_are_cropped(
    serve_bundle: Path, small_world: Path, tmp_path: Path
) -> None:
    """The default policy indexes catalog shots whole; a detector that fires cuts the same
    photo into boxes, yet the photo's own product leads its largest garment's matches,
    marked exact; a photo that is not in the catalog gets no exact match."""
    import torch

    from bentos.engine import Bundle, SearchEngine
    from pipelines.index import flat

    torch.set_num_threads(2)
    bundle = Bundle.load(serve_bundle)
    bundle.detector.score_thresh = 0.0
    bundle.detector.tailor_config["predict_score_thresh"] = 0.0
    products, images = flat.world_catalog(small_world)
    bundle.index = flat.load_index(flat.build_flat_index(bundle.embedder, products[:12], images, tmp_path / "ix", "t"))
    engine = SearchEngine(bundle, score_min=0.0, max_garments=2, exact_photo_min=0.97)
    for p in products[:3]:
        with Image.open(images[p["product_id"]]) as im:
            img = im.convert("RGB")
        res = engine.search(img, k=3)
        assert not res["fallback_whole_image"]
        big = max(res["garments"], key=lambda g: (g["box"][2] - g["box"][0]) * (g["box"][3] - g["box"][1]))
        assert big["matches"][0]["product_id"] == p["product_id"] and big["matches"][0]["exact"]
        assert len(big["matches"]) == 3 and len({m["product_id"] for m in big["matches"]}) == 3
    with Image.open(images[products[20]["product_id"]]) as im:  # a product the index does not hold
        res = engine.search(im.convert("RGB"), k=3)
    assert not any(m.get("exact") for g in res["garments"] for m in g["matches"])


def test_bundle_with_a_registry_format_index_serves_product_cards(
    serve_bundle: Path, small_world: Path, tmp_path: Path
):
    """A deployed bundle holds a ``pipelines.index`` version (faiss IVF + id map + product
    cards), not the flat fallback: it loads, and hits carry the catalog's product cards."""
    import numpy as np
    import pandas as pd

    from bentos.engine import Bundle, SearchEngine
    from pipelines.index.build import build_index
    from pipelines.index.embed import assign_ids, product_cards
    from pipelines.index.flat import load_index
    from pipelines.index.store import save_index

    flat = load_index(serve_bundle / "index")
    rows = pd.DataFrame(flat.products)
    ids, codes, seq = assign_ids(rows["category"].tolist())
    table = pd.DataFrame(
        {"vector_id": ids, "product_id": rows["product_id"], "image": "x.jpg", "category": rows["category"]}
    )
    index, meta = build_index(flat.vectors, ids, recall_target=0.95)
    meta.update({"embedder_version": "fresh", "categories": codes, "next_seq": seq})
    cat = tmp_path / "catalog.parquet"
    rows.assign(title=[f"Card {p}" for p in rows["product_id"]]).to_parquet(cat)
    out = save_index(index, table, meta, out=tmp_path / "bundle-index", products=product_cards(cat))
    bundle = Bundle.load(serve_bundle)
    bundle.index = load_index(out)
    assert bundle.index.version == json.loads((out / "meta.json").read_text())["version"]
    pid = rows["product_id"][3]
    with Image.open(small_world / "images" / "shop" / f"{pid}.jpg") as im:
        res = SearchEngine(bundle).search(im.convert("RGB"), k=5)
    top = res["garments"][0]["matches"][0]
    assert top["product_id"] == pid and top["title"] == f"Card {pid}" and np.isclose(top["score"], 1.0, atol=1e-3)
    assert {"mall", "url", "image_url", "price", "currency", "category"} <= set(top)


# --------------------------------------------------------------------------- batching
def test_micro_batcher_groups_concurrent_calls_and_keeps_order():
    import threading
    import time as _time
    from concurrent.futures import ThreadPoolExecutor

    from bentos.batching import MicroBatcher

    seen: list[int] = []
    gate = threading.Event()

    def slow_double(items: list[int]) -> list[int]:
        seen.append(len(items))
        gate.wait(5)  # the first pass blocks until the others are queued behind it
        return [2 * i for i in items]

    b = MicroBatcher(slow_double, max_batch=4)
    with ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(b, i) for i in range(9)]
        _time.sleep(0.3)
        gate.set()
        assert [f.result(timeout=10) for f in futs] == [2 * i for i in range(9)]
    assert seen[0] == 1 and max(seen) == 4 and sum(seen) == 9 and b.items == 9
    assert b.batches == len(seen) < 9

    def broken(items):
        raise ValueError("model failed")

    bad = MicroBatcher(broken)
    with pytest.raises(ValueError, match="model failed"):
        bad(1)
    with pytest.raises(ValueError, match="model failed"):  # the worker survives an error
        bad(2)


def test_micro_batcher_workers_keep_batches_in_flight_together():
    """With ``workers=2`` two passes run at the same time (each blocks until the other has
    started: one worker would time out on the barrier), and every caller gets its own result."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from bentos.batching import MicroBatcher

    both_running = threading.Barrier(2, timeout=5)

    def square(items: list[int]) -> list[int]:
        both_running.wait()
        return [i * i for i in items]

    b = MicroBatcher(square, max_batch=1, workers=2)
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(b, [3, 4])) == [9, 16]
    assert b.batches == 2 and b.items == 2
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(square, workers=0)


def test_image_models_are_batch_invariant(serve_bundle: Path, small_world: Path):
    """A photo gives the same detections and parse alone or in a batch (fixed-size canvases),
    so batching across requests never changes a search result or the index's crop."""
    import numpy as np
    import torch

    from bentos.engine import Bundle, SearchEngine

    torch.set_num_threads(2)
    bundle = Bundle.load(serve_bundle)
    bundle.detector.score_thresh = 0.0
    bundle.detector.tailor_config["predict_score_thresh"] = 0.0
    engine = SearchEngine(bundle)
    paths = (
        sorted((small_world / "images" / "street").glob("*.jpg"))[:2]
        + sorted((small_world / "images" / "shop").glob("*.jpg"))[:2]
    )
    imgs = []
    for p in paths:
        with Image.open(p) as im:
            imgs.append(im.convert("RGB"))
    batched = engine.image_models(imgs)
    for img, (det_b, lab_b) in zip(imgs, batched, strict=True):
        det_1, lab_1 = engine.image_models([img])[0]
        assert len(det_1["boxes"]) == len(det_b["boxes"]) > 0
        # the same detections (equal scores may come out in another order) ...
        assert np.allclose(sorted(det_1["scores"]), sorted(det_b["scores"]), atol=1e-6)
        # (each box has its twin within 0.05 px: rounding both to 0.1 px split 213.35 into 213.3 / 213.4)
        b1, bb = np.asarray(det_1["boxes"]), np.asarray(det_b["boxes"])
        assert all(np.abs(bb - b).max(axis=1).min() <= 0.05 for b in b1)
        assert all(np.abs(b1 - b).max(axis=1).min() <= 0.05 for b in bb)
        # ... so the same best box, the crop the index and the service take
        assert det_1["boxes"][0] == pytest.approx(det_b["boxes"][0], abs=1e-3)
        assert (lab_1 == lab_b).mean() > 0.999 and lab_1.shape == (img.height, img.width)


def test_chunked_upload_over_the_limit_is_413(client):
    """No Content-Length (chunked): the streamed body is counted and the answer is the same
    413 as for a declared size, not the form parser's 400."""
    boundary = "tailorboundary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(60):
            yield b"\xff" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/search", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text


class _FailingEngine:
    """An engine whose search fails with a message that must not reach the client."""

    def search(self, img, k, category):
        raise RuntimeError("cannot open /srv/secret/index.faiss from 10.1.2.3")


def test_server_errors_never_echo_the_exception():
    from fastapi.testclient import TestClient

    from bentos._io import load_config
    from bentos.api import build_app

    with TestClient(build_app(lambda: _FailingEngine(), load_config()), raise_server_exceptions=False) as c:
        r = c.post("/search", files={"image": ("a.jpg", jpeg(), "image/jpeg")})
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and "incident" in err["message"]
    assert "secret" not in r.text and "10.1.2.3" not in r.text


def test_concurrent_decodes_are_bounded(monkeypatch):
    """With max_decodes 1, four concurrent uploads are decoded one at a time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    import bentos.api as api
    from bentos._io import load_config

    real, lock, state = api.decode_image, threading.Lock(), {"now": 0, "peak": 0}

    def slow_decode(data, limits):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.2)
        with lock:
            state["now"] -= 1
        return real(data, limits)

    monkeypatch.setattr(api, "decode_image", slow_decode)
    cfg = load_config()
    cfg = {**cfg, "limits": {**cfg["limits"], "max_decodes": 1}}
    with TestClient(api.build_app(lambda: _FailingEngine(), cfg), raise_server_exceptions=False) as c:
        with ThreadPoolExecutor(4) as pool:
            codes = list(
                pool.map(
                    lambda _: c.post("/search", files={"image": ("a.jpg", jpeg(), "image/jpeg")}).status_code, range(4)
                )
            )
    assert codes == [500] * 4 and state["peak"] == 1


def test_a_large_photo_is_worked_on_at_the_working_size(serve_bundle: Path):
    """Detector and parser see a copy at most work_side a side; masks come at that size and
    boxes in the photo's own pixels (a 12 MP photo never gets a full-size label map)."""
    from bentos.engine import Bundle, SearchEngine, working_copy

    engine = SearchEngine(Bundle.load(serve_bundle), work_side=256)
    seen = []
    real = engine.image_fn
    engine.image_fn = lambda im: (seen.append(im.size), real(im))[1]
    out = engine.search(Image.new("RGB", (1200, 900), (180, 60, 60)), k=1)
    assert seen == [(256, 192)] and out["image"] == {"width": 1200, "height": 900}
    assert out["garments"]
    for g in out["garments"]:
        assert g["mask"]["size"] == [192, 256]
        x1, y1, x2, y2 = g["box"]
        assert 0 <= x1 < x2 <= 1200 and 0 <= y1 < y2 <= 900
    small = Image.new("RGB", (200, 100))
    assert working_copy(small, 256) is small
