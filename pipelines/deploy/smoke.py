"""Smoke test of a running search server (the candidate in the idle slot).

Checks, in order: ``/healthz`` and ``/readyz`` answer 200; ``/info`` names the expected
versions; for a few catalog products, the product's own image returns that product in the
top 5; bad input (not an image, truncated image, ``k`` out of range, a pickle content type)
gets a 4xx JSON error. Raises :class:`SmokeFailed` listing every failed check.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx


class SmokeFailed(RuntimeError):
    """The candidate failed its smoke test; ``failures`` lists the reasons."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("smoke test failed: " + "; ".join(failures))
        self.failures = failures


def index_products(bundle: Path) -> list[dict[str, Any]]:
    """Product rows of the bundle's index (``products.jsonl`` / ``metadata.jsonl`` / parquet)."""
    d = Path(bundle) / "index"
    for name in ("products.jsonl", "metadata.jsonl"):
        if (d / name).exists():
            return [json.loads(line) for line in (d / name).read_text().splitlines() if line.strip()]
    for pq in sorted(d.glob("*.parquet")):
        import pandas as pd

        df = pd.read_parquet(pq)
        if "product_id" in df:
            return df.to_dict("records")
    return []


def _product_image(p: dict[str, Any], bundle: Path, base_url: str, world: Path | None) -> bytes | None:
    """The product's own image: a local path from the metadata or the bundle, else its URL."""
    pid = str(p.get("product_id"))
    candidates = [p.get(k) for k in ("image_path", "image_file", "local_image", "image") if isinstance(p.get(k), str)]
    candidates += [str(Path(bundle) / "index" / "images" / f"{pid}.jpg")]
    if world is not None:
        candidates.append(str(Path(world) / "images" / "shop" / f"{pid}.jpg"))
    for c in candidates:
        if c and not c.startswith(("http://", "https://", "/catalog")) and Path(c).is_file():
            return Path(c).read_bytes()
    url = p.get("image_url")
    if isinstance(url, str) and url:
        try:
            r = httpx.get(url if url.startswith("http") else base_url + url, timeout=10)
            if r.status_code == 200:
                return r.content
        except httpx.HTTPError:
            return None
    return None


def _jpeg(size: tuple[int, int] = (96, 96)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, "JPEG")
    return buf.getvalue()


def smoke(
    base_url: str,
    bundle: Path,
    expected_versions: dict[str, str] | None = None,
    n_products: int = 3,
    top: int = 5,
    world: Path | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Run the checks against ``base_url``; returns a report or raises :class:`SmokeFailed`."""
    failures: list[str] = []
    report: dict[str, Any] = {"url": base_url, "hits": []}
    with httpx.Client(base_url=base_url, timeout=timeout_s) as c:
        for path in ("/healthz", "/readyz"):
            try:
                r = c.get(path)
                if r.status_code != 200:
                    failures.append(f"GET {path} -> {r.status_code}")
            except httpx.HTTPError as exc:
                failures.append(f"GET {path} failed: {exc}")
        if failures:
            raise SmokeFailed(failures)
        info = c.get("/info").json()
        if expected_versions and info.get("versions") != expected_versions:
            failures.append(f"serves versions {info.get('versions')}, expected {expected_versions}")
        products = [p for p in index_products(bundle) if p.get("product_id")]
        # spread the picks over the catalog (first, middle, last ...), deterministically
        picks = [
            products[i * (len(products) - 1) // max(n_products - 1, 1)] for i in range(min(n_products, len(products)))
        ]
        if not picks:
            failures.append("the bundle's index lists no products to test retrieval with")
        for p in picks:
            img = _product_image(p, bundle, base_url, world)
            if img is None:
                failures.append(f"no image found for catalog product {p['product_id']}")
                continue
            r = c.post("/search", files={"image": ("p.jpg", img, "image/jpeg")}, data={"k": str(top)})
            if r.status_code != 200:
                failures.append(f"search with {p['product_id']}'s image -> {r.status_code} {r.text[:200]}")
                continue
            found = [m["product_id"] for g in r.json()["garments"] for m in g["matches"][:top]]
            report["hits"].append({"product_id": p["product_id"], "found": p["product_id"] in found})
            if p["product_id"] not in found:
                failures.append(
                    f"product {p['product_id']}'s own image does not return it in the top {top} (got {found[:top]})"
                )
        bad = {
            "not an image": {"files": {"image": ("x.txt", b"hello, not an image", "text/plain")}},
            "truncated image": {"files": {"image": ("t.jpg", _jpeg((200, 200))[:300], "image/jpeg")}},
            "k out of range": {"files": {"image": ("x.jpg", _jpeg(), "image/jpeg")}, "data": {"k": "0"}},
            "missing image": {"data": {"k": "3"}, "files": {"other": ("x", b"x", "text/plain")}},
        }
        for name, kw in bad.items():
            r = c.post("/search", **kw)
            if not 400 <= r.status_code < 500 or "error" not in r.json():
                failures.append(f"bad input ({name}) -> {r.status_code}, expected a 4xx JSON error")
        r = c.post("/search", content=b"\x80\x04K\x01.", headers={"content-type": "application/vnd.bentoml+pickle"})
        if not 400 <= r.status_code < 500:
            failures.append(f"pickle payload -> {r.status_code}, expected 4xx")
    if failures:
        raise SmokeFailed(failures)
    report["ok"] = True
    return report
