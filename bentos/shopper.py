"""Shopper features on the search service: a virtual closet, complete-the-look, and attribute
search with a catalog map.

* ``/closet/items`` - a shopper's own garments, classified on upload and stored per user
  (:class:`bentos.closet.store.ClosetStore`), browsed by category, corrected, deleted;
* ``POST /look`` - each garment of a look photo against the shopper's closet: ``covered``
  by the most similar owned item of the same category when the cosine similarity is at
  least ``look.covered_min`` (``config/serving.yaml``), else ``missing`` with shop products;
* ``GET /products`` - the catalog filtered by tags (computed by the champion tagger when
  the index was built), with cursor paging;
* ``POST /search/attributes`` - products ranked by the tags they share with each garment
  of a photo, then by embedding similarity; the garment's point on the catalog map;
* ``GET /catalog/map`` - the 2-D layout of the catalog (PCA of the embeddings).

Closet and look routes name their user with ``Authorization: Bearer <token>`` (``tailor
users add``): no or an unknown token is 401; another user's item is 404, never visible.
Uploads follow ``/search``'s bad-input rules (the same decoder, limits and upload guard).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, UploadFile
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ._io import BadInput, Limits, decode_image, parse_category

#: upload routes guarded like /search (content type, byte limit while streaming)
UPLOAD_PATHS = ("/closet/items", "/look", "/search/attributes")

_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"GIF8", "gif"), (b"BM", "bmp"))


def image_ext(data: bytes) -> str:
    """File extension of an already validated upload, from its magic bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "img"


# --------------------------------------------------------------------------- schema
class TagValue(BaseModel):
    value: str
    score: float | None = None
    source: str | None = Field(None, description="model, or user for a hand correction (kept by re-tagging)")


class ClosetItemOut(BaseModel):
    id: str
    category: str
    category_score: float | None = None
    category_source: str = Field(description="model, or user (an override at upload or a correction)")
    tags: dict[str, TagValue]
    box: list[float] | None = Field(None, description="the garment's box in the photo; None = the whole photo")
    image_url: str = Field(description="the stored photo (same bearer token)")
    model_versions: dict[str, str]
    created_at: str
    updated_at: str


class ClosetListing(BaseModel):
    categories: dict[str, list[ClosetItemOut]] = Field(description="the user's items grouped by category")
    count: int


class ItemPatch(BaseModel):
    category: str | None = None
    tags: dict[str, str] | None = Field(None, description='{head: value} corrections, e.g. {"color": "navy"}')


class ProductCard(BaseModel):
    product_id: str
    title: str | None = None
    mall: str | None = None
    url: str | None = None
    image_url: str | None = None
    price: float | None = None
    currency: str | None = None
    category: str | None = None
    tags: dict[str, str] = Field(default_factory=dict, description="the champion tagger's tags at index build")
    x: float | None = Field(None, description="position on the catalog map")
    y: float | None = None


class ProductPage(BaseModel):
    products: list[ProductCard]
    total: int = Field(description="products matching the filters")
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; None on the last")


class RankedProduct(ProductCard):
    shared_tags: int = Field(description="tags shared with the garment, its category included")
    matching: list[str]
    score: float = Field(description="cosine similarity (the tie-break)")


class AttributeGarment(BaseModel):
    box: list[float]
    category: str
    tags: dict[str, TagValue]
    map_xy: list[float] = Field(description="the garment's point on the catalog map")
    products: list[RankedProduct]


class AttributeResponse(BaseModel):
    garments: list[AttributeGarment]
    index_version: str


class MapPoint(BaseModel):
    product_id: str
    x: float
    y: float
    category: str | None = None
    title: str | None = None


class CatalogMap(BaseModel):
    method: str
    explained_variance: list[float] | None = None
    index_version: str
    points: list[MapPoint]


class LookGarment(BaseModel):
    box: list[float]
    category: str
    category_score: float
    tags: dict[str, TagValue]
    status: str = Field(
        description="covered (an owned item of the same category at least look.covered_min similar) or missing"
    )
    closet_item: ClosetItemOut | None = Field(None, description="the best-matching owned item of the same category")
    similarity: float | None = Field(None, description="cosine similarity of the garment and closet_item")
    products: list[dict[str, Any]] = Field(default_factory=list, description="shop products for a missing garment")


class LookResponse(BaseModel):
    garments: list[LookGarment]
    covered_min: float
    image: dict[str, int]


# --------------------------------------------------------------------------- routes
def add_shopper_routes(
    app: FastAPI,
    get_engine: Callable[[], Any],
    get_store: Callable[[], Any],
    get_catalog: Callable[[], Any],
    limits: Limits,
    config: dict[str, dict[str, Any]],
    categories: tuple[str, ...],
    errors: dict[int | str, dict[str, Any]],
) -> None:
    """Mount the closet, look, products and attribute routes on ``app``."""
    from models.taxonomy import APPLICABLE, ATTRIBUTES

    look_cfg = config.get("look") or {}
    covered_min = float(look_cfg.get("covered_min", 0.35))
    look_k = int(look_cfg.get("products", 6))
    k_max = int(config["search"]["k_max"])
    decode_slots = asyncio.Semaphore(max(1, limits.max_decodes))
    bearer = HTTPBearer(auto_error=False, description="a user's API token (`tailor users add NAME`)")
    auth_errors = {
        **errors,
        401: errors.get(401) or {"description": "missing, unknown or revoked token"},
        404: {"description": "no such item for this user"},
    }

    def current_user(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer), store: Any = Depends(get_store)
    ) -> Any:
        if creds is None:
            raise BadInput(401, "unauthorized", "send the user's API token as `Authorization: Bearer <token>`")
        user = store.user_for_token(creds.credentials)
        if user is None:
            raise BadInput(401, "unauthorized", "unknown or revoked API token")
        return user

    async def read_image(image: UploadFile) -> tuple[bytes, Any]:
        data = await image.read(limits.max_bytes + 1)
        async with decode_slots:
            img = await run_in_threadpool(decode_image, data, limits)
        return data, img

    def check_tags(tags: dict[str, str] | None) -> dict[str, str]:
        out = {}
        for head, value in (tags or {}).items():
            if head not in ATTRIBUTES:
                raise BadInput(422, "invalid_tag", f"tag must be one of {list(ATTRIBUTES)}, got {head[:40]!r}", "tags")
            if value not in ATTRIBUTES[head]:
                raise BadInput(
                    422,
                    f"invalid_{head}",
                    f"{head} must be one of {list(ATTRIBUTES[head])}, got {str(value)[:40]!r}",
                    head,
                )
            out[head] = value
        return out

    def item_or_404(fn: Callable[[], Any]) -> Any:
        from .closet.store import NotFound

        try:
            return fn()
        except NotFound:
            raise BadInput(404, "not_found", "no such closet item") from None

    def analysis(engine: Any, img: Any) -> Any:
        from .closet.store import Analysis

        d = engine.describe(img)
        return Analysis(
            category=d["category"],
            category_score=float(d["category_score"]),
            tags=d["tags"],
            embedding=d["embedding"],
            box=d["box"],
            versions=dict(engine.bundle.versions),
        )

    # ----------------------------------------------------------------- closet
    @app.post(
        "/closet/items",
        response_model=ClosetItemOut,
        status_code=201,
        responses=auth_errors,
        tags=["closet"],
        summary="Add a photo of a garment you own",
    )
    async def add_item(
        image: UploadFile = File(..., description="a photo of one garment you own"),
        category: str | None = Form(None, description="override the predicted category"),
        user: Any = Depends(current_user),
        store: Any = Depends(get_store),
        engine: Any = Depends(get_engine),
    ) -> Any:
        """Classify the photo's garment (category, tags, embedding) and store it in the user's closet."""
        cat = parse_category(category, categories)
        data, img = await read_image(image)
        a = await run_in_threadpool(analysis, engine, img)
        return await run_in_threadpool(store.add_item, user.id, data, image_ext(data), a, cat)

    @app.get(
        "/closet/items",
        response_model=ClosetListing,
        responses=auth_errors,
        tags=["closet"],
        summary="The user's closet, grouped by category",
    )
    async def list_items(
        category: str | None = Query(None, description="only this category"),
        user: Any = Depends(current_user),
        store: Any = Depends(get_store),
    ) -> Any:
        cat = parse_category(category, categories)
        items = await run_in_threadpool(store.list_items, user.id, cat)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            grouped.setdefault(it["category"], []).append(it)
        return {"categories": dict(sorted(grouped.items())), "count": len(items)}

    @app.get(
        "/closet/items/{item_id}",
        response_model=ClosetItemOut,
        responses=auth_errors,
        tags=["closet"],
        summary="One closet item",
    )
    async def get_item(item_id: str, user: Any = Depends(current_user), store: Any = Depends(get_store)) -> Any:
        return item_or_404(lambda: store.get_item(user.id, item_id))

    @app.get(
        "/closet/items/{item_id}/image",
        responses=auth_errors,
        tags=["closet"],
        summary="The stored photo of a closet item",
        response_class=FileResponse,
    )
    async def item_image(item_id: str, user: Any = Depends(current_user), store: Any = Depends(get_store)) -> Any:
        path, ext = item_or_404(lambda: store.item_image(user.id, item_id))
        media = {
            "jpg": "image/jpeg",
            "png": "image/png",
            "gif": "image/gif",
            "bmp": "image/bmp",
            "webp": "image/webp",
        }.get(ext, "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    @app.patch(
        "/closet/items/{item_id}",
        response_model=ClosetItemOut,
        responses=auth_errors,
        tags=["closet"],
        summary="Correct an item's category or tags",
    )
    async def patch_item(
        item_id: str, patch: ItemPatch, user: Any = Depends(current_user), store: Any = Depends(get_store)
    ) -> Any:
        cat = parse_category(patch.category, categories)
        tags = check_tags(patch.tags)
        if not cat and not tags:
            raise BadInput(422, "empty_patch", "send a category and/or tags to correct", None)
        return item_or_404(lambda: store.update_item(user.id, item_id, cat, tags))

    @app.delete(
        "/closet/items/{item_id}",
        status_code=204,
        responses=auth_errors,
        tags=["closet"],
        summary="Delete an item (its photo too, when no other item uses it)",
    )
    async def delete_item(item_id: str, user: Any = Depends(current_user), store: Any = Depends(get_store)) -> None:
        item_or_404(lambda: store.delete_item(user.id, item_id))

    # ----------------------------------------------------------------- look
    @app.post(
        "/look",
        response_model=LookResponse,
        responses=auth_errors,
        tags=["closet"],
        summary="Complete the look: which garments of a look you own, and what to buy",
    )
    async def look(
        image: UploadFile = File(..., description="a look you like (street or influencer photo)"),
        k: int = Form(look_k, ge=1, le=k_max, description="shop products per missing garment"),
        user: Any = Depends(current_user),
        store: Any = Depends(get_store),
        engine: Any = Depends(get_engine),
    ) -> Any:
        _, img = await read_image(image)
        return await run_in_threadpool(complete_the_look, engine, store, user.id, img, k, covered_min)

    # ----------------------------------------------------------------- attributes
    @app.get(
        "/products",
        response_model=ProductPage,
        responses=errors,
        tags=["attributes"],
        summary="The catalog filtered by category and tags",
    )
    async def products(
        category: str | None = Query(None),
        color: str | None = Query(None),
        pattern: str | None = Query(None),
        sleeve: str | None = Query(None),
        neckline: str | None = Query(None),
        length: str | None = Query(None),
        limit: int = Query(24, ge=1, le=k_max),
        cursor: str | None = Query(None),
        catalog: Any = Depends(get_catalog),
    ) -> Any:
        cat = parse_category(category, categories)
        tags = check_tags(
            {
                h: v
                for h, v in {
                    "color": color,
                    "pattern": pattern,
                    "sleeve": sleeve,
                    "neckline": neckline,
                    "length": length,
                }.items()
                if v
            }
        )
        try:
            return catalog.filter(cat, tags, limit, cursor)
        except ValueError as exc:
            raise BadInput(422, "invalid_cursor", str(exc), "cursor") from None

    @app.post(
        "/search/attributes",
        response_model=AttributeResponse,
        responses=errors,
        tags=["attributes"],
        summary="Products that share the most tags with each garment of a photo",
    )
    async def search_attributes(
        image: UploadFile = File(..., description="the photo"),
        k: int = Form(10, ge=1, le=k_max, description="products per garment"),
        engine: Any = Depends(get_engine),
        catalog: Any = Depends(get_catalog),
    ) -> Any:
        _, img = await read_image(image)

        def run() -> dict[str, Any]:
            a = engine.analyze(img)
            out = []
            for g, emb in zip(a["garments"], a["embeddings"], strict=True):
                tags = {h: t["value"] for h, t in g["tags"].items() if h in APPLICABLE.get(g["category"], ())}
                out.append(
                    {
                        "box": g["box"],
                        "category": g["category"],
                        "tags": g["tags"],
                        "map_xy": catalog.project(emb),
                        "products": catalog.by_attributes(g["category"], tags, emb, k),
                    }
                )
            return {"garments": out, "index_version": catalog.version}

        return await run_in_threadpool(run)

    @app.get("/catalog/map", response_model=CatalogMap, tags=["attributes"], summary="The 2-D map of the catalog")
    async def catalog_map(catalog: Any = Depends(get_catalog)) -> Any:
        return catalog.map_points()


def complete_the_look(engine: Any, store: Any, user_id: int, img: Any, k: int, covered_min: float) -> dict[str, Any]:
    """Per garment of the look: the most similar owned item of its category (cosine of the
    embeddings), ``covered`` at ``covered_min`` or more, else ``missing`` with ``k`` shop
    products of that category."""
    a = engine.analyze(img)
    garments, emb = a["garments"], a["embeddings"]
    owned: dict[str, tuple[list[dict[str, Any]], np.ndarray]] = {}
    out, missing = [], []
    for i, g in enumerate(garments):
        if g["category"] not in owned:
            owned[g["category"]] = store.embeddings(user_id, g["category"])
        items, vecs = owned[g["category"]]
        best, sim = None, None
        if len(items):
            sims = vecs @ emb[i]
            j = int(np.argmax(sims))
            best, sim = items[j], round(float(sims[j]), 4)
        covered = sim is not None and sim >= covered_min
        out.append(
            {
                "box": g["box"],
                "category": g["category"],
                "category_score": g["category_score"],
                "tags": g["tags"],
                "status": "covered" if covered else "missing",
                "closet_item": best,
                "similarity": sim,
                "products": [],
            }
        )
        if not covered:
            missing.append(i)
    for i in missing:  # one index query per missing garment, restricted to its category
        out[i]["products"] = engine.bundle.index.search(emb[i : i + 1], k, category=garments[i]["category"])[0]
    return {"garments": out, "covered_min": covered_min, "image": a["image"]}
