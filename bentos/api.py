"""The public HTTP API (FastAPI, mounted into the BentoML service; OpenAPI generated from it).

Routes: ``POST /search`` (multipart: ``image`` file, ``k`` 1..100, optional ``category``),
``GET /healthz``, ``GET /readyz``, ``GET /info``, the demo page ``GET /demo`` (+ ``/static``)
and, when the bundle carries product thumbnails, ``/catalog/images``. Under ``bentoml
serve`` BentoML answers ``/healthz`` and ``/readyz`` itself (same meaning: 200 live /
ready, 503 not ready) and serves the OpenAPI spec at ``/docs.json`` with a UI at ``/``.

Every client error is a JSON body ``{"error": {"code", "message", "field"}}`` with a 4xx
status; a guard in front of the app enforces the byte limit while the body streams in and
rejects pickle and non-multipart payloads before anything parses them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._io import (
    BadInput,
    Limits,
    check_content_type,
    check_declared_size,
    decode_image,
    parse_category,
    parse_k,
)

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("tailor.api")

#: The demo page's policy: scripts, styles and connections only to this service, no inline
#: script or style attribute, no plugins, no framing, no <base> rewrites. Product thumbnails
#: come from the malls' own hosts, so images may be any http(s) URL (the page only ever sets
#: http(s) sources, see safeUrl in static/app.js).
DEMO_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' http: https: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
DEMO_HEADERS = {
    "Content-Security-Policy": DEMO_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _WithHeaders:
    """ASGI wrapper adding fixed headers to every response of the wrapped app (the demo
    page's static files); the API's routes are left as they are."""

    def __init__(self, app: ASGIApp, headers: dict[str, str]) -> None:
        self.app = app
        self.raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.raw]}
            await send(message)

        await self.app(scope, receive, send_with)


API_VERSION = "1.0"


# --------------------------------------------------------------------------- response schema
class Match(BaseModel):
    """One catalog product similar to a garment."""

    product_id: str
    title: str | None = None
    mall: str | None = None
    url: str | None = None
    image_url: str | None = None
    price: float | None = None
    currency: str | None = None
    category: str | None = None
    score: float = Field(description="cosine similarity of the garment crop and the product image")
    exact: bool = Field(
        False,
        description="the photo sent is this product's own catalog photo (whole-photo "
        "similarity at least search.exact_photo_min)",
    )


class Tag(BaseModel):
    value: str
    score: float = Field(description="tagger probability of the value")


class Mask(BaseModel):
    size: list[int] = Field(description="[height, width] of the photo")
    counts: str = Field(description="COCO compressed RLE (pycocotools.mask.decode)")


class Garment(BaseModel):
    box: list[float] = Field(description="[x1, y1, x2, y2] in photo pixels")
    score: float = Field(description="detector score (tagger probability when the whole photo is the garment)")
    category: str = Field(description="product-taxonomy category, from the tagger on the garment crop")
    category_score: float = Field(description="tagger probability of the category")
    detector_category: str | None = Field(
        None, description="the detector's class for the box (None when the whole photo is the garment)"
    )
    tags: dict[str, Tag]
    mask: Mask
    matches: list[Match]


class Versions(BaseModel):
    detector: str
    parser: str
    tagger: str
    embedder: str
    index: str


class SearchResponse(BaseModel):
    garments: list[Garment] = Field(description="sorted by score, highest first")
    versions: Versions
    timings_ms: dict[str, float]
    image: dict[str, int] = Field(description="width and height of the decoded photo")
    fallback_whole_image: bool = Field(description="true when nothing was detected and the whole photo is one garment")


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "not an image, truncated/corrupt, too small, pickle"},
    413: {"model": ErrorResponse, "description": "over the byte or pixel limit, decompression bomb"},
    415: {"model": ErrorResponse, "description": "not a multipart form, or a pickle content type"},
    422: {"model": ErrorResponse, "description": "missing field, k out of range, unknown category"},
}


# --------------------------------------------------------------------------- body guard
class _TooLarge(Exception):
    pass


class UploadGuard:
    """ASGI middleware for ``POST /search``: content-type and byte limit before parsing.

    The declared Content-Length is checked first; the streamed body is also counted, so a
    chunked upload without a length cannot exceed the limit either.
    """

    def __init__(self, app: ASGIApp, limits: Limits, paths: tuple[str, ...] = ("/search",)) -> None:
        self.app = app
        self.limits = limits
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            check_content_type(headers.get("content-type"))
            check_declared_size(headers.get("content-length"), self.limits)
        except BadInput as exc:
            await _send_json(send, exc.status, exc.to_dict())
            return
        budget = self.limits.max_bytes + 64 * 1024
        seen = 0
        over = False  # the body passed the budget: the answer is our 413, whatever the app says
        started = False
        too_large = BadInput(
            413, "too_large", f"request body is over the image limit of {self.limits.max_bytes} bytes", "image"
        ).to_dict()

        async def counting_receive() -> Message:
            nonlocal seen, over
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > budget:
                    over = True
                    raise _TooLarge()
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if over:
                # The form parser turns the interrupted read into its own 400 ("error parsing
                # the body"): a chunked upload with no Content-Length must get the same 413 as
                # one that declares its size. The app's response is replaced, once.
                if msg["type"] == "http.response.start" and not started:
                    started = True
                    await _send_json(send, 413, too_large)
                return
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                started = True
                await _send_json(send, 413, too_large)


def connection_dropped(exc: BaseException) -> bool:
    """A dropped or refused connection to the internal crop worker: retryable, never the
    client's fault (the service retries it; if it persists the answer is a 503)."""
    import aiohttp

    return isinstance(exc, aiohttp.ClientConnectionError | ConnectionError)


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


# --------------------------------------------------------------------------- app
def create_app(
    get_engine: Callable[[], Any],
    limits: Limits,
    k_max: int = 100,
    k_default: int = 10,
    categories: tuple[str, ...] = (),
    catalog_images: Path | None = None,
    is_ready: Callable[[], bool] | None = None,
    get_store: Callable[[], Any] | None = None,
    get_catalog: Callable[[], Any] | None = None,
    config: dict[str, dict[str, Any]] | None = None,
) -> FastAPI:
    """The FastAPI app. ``get_engine`` returns the :class:`~bentos.engine.SearchEngine`
    (a FastAPI dependency, so the BentoML service and tests can supply their own).
    ``get_store`` (a :class:`~bentos.closet.store.ClosetStore`) and ``get_catalog`` (a
    :class:`~bentos.catalog.CatalogView`) add the shopper routes of :mod:`bentos.shopper`."""
    app = FastAPI(
        title="Tailor visual search",
        version=API_VERSION,
        description="Search fashion products by photo: detected garments with box, mask, tags and "
        'similar catalog products. Errors are JSON `{"error": {code, message, field}}` with a 4xx status.',
    )

    decode_slots = asyncio.Semaphore(max(1, limits.max_decodes))

    @app.exception_handler(BadInput)
    async def _bad_input(_request: Any, exc: BadInput) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Any, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request", "type": ""}
        field = str(first["loc"][-1]) if first.get("loc") else None
        code = "missing_field" if first.get("type") == "missing" else f"invalid_{field or 'request'}"
        msgs = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}" for e in errs)
        if first.get("type") == "missing":
            msgs = f"form field {field!r} is required ({msgs})"
        return JSONResponse(BadInput(422, code, msgs, field).to_dict(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": f"http_{exc.status_code}", "message": str(exc.detail), "field": None}},
            status_code=exc.status_code,
        )

    @app.exception_handler(Exception)
    async def _server_error(_request: Any, exc: Exception) -> JSONResponse:
        # Valid input that the server could not serve: overload of the crop worker is a
        # retryable 503, anything else a 500 - both JSON, never an HTML/text body.
        overloaded = type(exc).__name__ in ("ServiceUnavailable", "TimeoutError", "ReadTimeout") or connection_dropped(
            exc
        )
        status = 503 if overloaded else 500
        # The exception's text can hold paths, addresses or data: it goes to the service log
        # under an incident id, and the client gets only the id.
        incident = uuid.uuid4().hex[:12]
        log.error("incident %s: %s %s", incident, type(exc).__name__, exc, exc_info=exc)
        message = (
            "the service is overloaded; retry shortly" if overloaded else "internal error"
        ) + f" (incident {incident})"
        return JSONResponse(
            {"error": {"code": "unavailable" if overloaded else "internal_error", "message": message, "field": None}},
            status_code=status,
            headers={"Retry-After": "1"} if overloaded else None,
        )

    @app.post("/search", response_model=SearchResponse, responses=_ERRORS, summary="Search products by photo")
    async def search(
        image: UploadFile = File(..., description="the photo (JPEG, PNG, WebP, BMP or GIF)"),
        k: int = Form(k_default, ge=1, le=k_max, description=f"matches per garment, 1..{k_max}"),
        category: str | None = Form(None, description="only match products of this category: " + ", ".join(categories)),
        engine: Any = Depends(get_engine),
    ) -> Any:
        """Detect the garments of a photo; each comes with box, mask, tags and ``k`` similar products."""
        kk = parse_k(k, k_max, k_default)  # already validated by FastAPI; kept for direct callers
        cat = parse_category(category, categories) if categories else (category or None)
        data = await image.read(limits.max_bytes + 1)
        async with decode_slots:  # at most max_decodes full-size images being decoded at once
            img = await run_in_threadpool(decode_image, data, limits)
        return await run_in_threadpool(engine.search, img, kk, cat)

    @app.get("/healthz", summary="Liveness: 200 while the process serves")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once models and index are loaded, else 503")
    async def readyz() -> JSONResponse:
        ok = is_ready() if is_ready else True
        return JSONResponse({"status": "ready" if ok else "loading"}, status_code=200 if ok else 503)

    @app.get("/info", summary="Served versions and input limits")
    async def info(engine: Any = Depends(get_engine)) -> dict[str, Any]:
        from models.taxonomy import APPLICABLE, ATTRIBUTES

        return {
            "versions": engine.bundle.versions,
            "api_version": API_VERSION,
            "categories": list(categories),
            "attributes": {h: list(v) for h, v in ATTRIBUTES.items()},
            "applicable": {c: list(v) for c, v in APPLICABLE.items()},
            "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels, "k_max": k_max},
        }

    if get_store is not None and get_catalog is not None:
        from .shopper import add_shopper_routes

        add_shopper_routes(
            app, get_engine, get_store, get_catalog, limits, config or {"search": {"k_max": k_max}}, categories, _ERRORS
        )

    @app.get("/demo", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=DEMO_HEADERS)

    app.mount("/static", _WithHeaders(StaticFiles(directory=STATIC_DIR), DEMO_HEADERS), name="static")
    if catalog_images is not None and Path(catalog_images).is_dir():
        app.mount("/catalog/images", StaticFiles(directory=catalog_images), name="catalog-images")
    return app


def build_app(
    get_engine: Callable[[], Any],
    config: dict[str, dict[str, Any]],
    catalog_images: Path | None = None,
    is_ready: Callable[[], bool] | None = None,
    get_store: Callable[[], Any] | None = None,
    get_catalog: Callable[[], Any] | None = None,
) -> FastAPI:
    """:func:`create_app` from the serving config, wrapped in :class:`UploadGuard`."""
    from models.taxonomy import CATEGORIES

    from ._io import limits_from_config
    from .shopper import UPLOAD_PATHS

    limits = limits_from_config(config)
    app = create_app(
        get_engine,
        limits,
        int(config["search"]["k_max"]),
        int(config["search"]["k_default"]),
        tuple(CATEGORIES),
        catalog_images,
        is_ready,
        get_store,
        get_catalog,
        config,
    )
    app.add_middleware(UploadGuard, limits=limits, paths=("/search", *UPLOAD_PATHS))
    return app
