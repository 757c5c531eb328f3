"""The Scrapy spider that crawls one mall into a run store (see :mod:`pipelines.crawl.state`).

Discovery: the configured sitemap (sitemap indexes followed) plus link following from the
start URLs (the ``css`` extractor's link selectors, else every in-scope ``a[href]``),
bounded by ``max_pages`` and ``max_depth``. Each page goes through the configured
extractor; each product's images are fetched, checked and stored content-addressed.
Every error ends in the failures table via :meth:`MallSpider.on_error`.

Incremental: pages and images known from the previous crawl (state store) are requested
with ``If-None-Match`` / ``If-Modified-Since``; a 304 reuses the stored record.
Resumable: product pages and images already in the run store are not fetched again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.sitemap import Sitemap
from twisted.internet.error import TCPTimedOutError, TimeoutError  # noqa: A004

from pipelines.crawl.config import MallConfig
from pipelines.crawl.extract import ExtractionError, extract_product, page_links
from pipelines.crawl.images import (
    ImageInfo,
    ImageRejected,
    blob_path,
    check_headers,
    decode,
    store_blob,
)
from pipelines.crawl.middlewares import RobotsDenied
from pipelines.crawl.scope import OutOfScope
from pipelines.crawl.state import Store


def _header(resp: Response, name: str) -> str | None:
    v = resp.headers.get(name)
    return v.decode("latin-1") if v else None


class MallSpider(scrapy.Spider):
    """Crawl one mall described by a :class:`MallConfig`."""

    name = "tailor_mall"

    def __init__(self, mall: dict[str, Any], run_db: str, state_db: str, blobs: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg = MallConfig.model_validate(mall)
        self.pol = self.cfg.politeness
        self.store = Store(Path(run_db))
        self.state = Store(Path(state_db))
        self.blobs = Path(blobs)
        # What the previous finished crawl of this mall knew (for conditional requests).
        self.prev_by_url = self.state.product_by_url()
        self.prev_images = self.state.images()
        # What this run already holds (a restart after a kill skips it).
        done = self.store.con.execute("SELECT url FROM pages WHERE product_id IS NOT NULL")
        self.done_pages = {r[0] for r in done}
        self.done_images = set(self.store.images())
        self.seen_pages: set[str] = set()
        self.seen_images: set[str] = set()
        self.pages_scheduled = self.store.count("pages")
        self.limit_hit: list[str] = []

    # ------------------------------------------------------------------ requests
    async def start(self):
        """Sitemap(s) first (they list every product), then the start pages."""
        self.store.set_meta("started_at", self.store.get_meta("started_at") or time.time())
        # Resume: products stored before a kill may still miss images.
        for p in self.store.products().values():
            for img in p["image_urls"]:
                req = self.image_request(img, p["product_id"])
                if req is not None:
                    yield req
        if self.cfg.sitemap:
            req = self.page_request(self.cfg.sitemap, 0, callback=self.parse_sitemap, kind="sitemap")
            if req is not None:
                yield req
        for url in self.cfg.start_urls:
            req = self.page_request(url, 0)
            if req is not None:
                yield req

    def page_request(
        self, url: str, depth: int, callback: Any = None, priority: int = 0, kind: str = "page"
    ) -> scrapy.Request | None:
        """A request for an HTML page (``kind="page"``) or a sitemap, or None (seen, out of
        scope, over limits). Each kind has its own size cap."""
        url = url.split("#", 1)[0]
        if url in self.seen_pages or not self.cfg.in_scope(url):
            return None
        if depth > self.pol.max_depth:
            self.crawler.stats.inc_value("tailor/depth_limited")
            self._limit("max_depth")
            return None
        self.seen_pages.add(url)
        if url in self.done_pages:
            return None  # fetched before a restart: its product is in the run store
        if self.pages_scheduled >= self.pol.max_pages:
            self._limit("max_pages")
            return None
        self.pages_scheduled += 1
        cap = self.pol.max_sitemap_bytes if kind == "sitemap" else self.pol.max_page_bytes
        meta: dict[str, Any] = {"tailor_depth": depth, "tailor_kind": kind, "download_maxsize": cap}
        headers = {}
        prev = self.prev_by_url.get(url)
        if prev and not prev.get("removed") and (prev.get("etag") or prev.get("last_modified")):
            headers = self._conditional(prev)
            meta["handle_httpstatus_list"] = [304]
        return scrapy.Request(
            url,
            callback=callback or self.parse_page,
            errback=self.on_error,
            headers=headers,
            meta=meta,
            priority=priority,
        )

    def image_request(self, url: str, product_id: str) -> scrapy.Request | None:
        """A request for one product image, or None when already fetched/scheduled."""
        if url in self.seen_images or url in self.done_images:
            return None
        self.seen_images.add(url)
        meta: dict[str, Any] = {
            "tailor_kind": "image",
            "product_id": product_id,
            "download_maxsize": self.pol.max_image_bytes,
        }
        headers = {}
        prev = self.prev_images.get(url)
        if prev and prev.get("sha256") and blob_path(self.blobs, prev["sha256"], prev["ext"]).exists():
            headers = self._conditional(prev)
            meta["handle_httpstatus_list"] = [304]
        # Images before pages: a killed crawl leaves complete products, not half ones.
        return scrapy.Request(
            url, callback=self.parse_image, errback=self.on_error, headers=headers, meta=meta, priority=20
        )

    @staticmethod
    def _conditional(prev: dict[str, Any]) -> dict[str, str]:
        h = {}
        if prev.get("etag"):
            h["If-None-Match"] = prev["etag"]
        if prev.get("last_modified"):
            h["If-Modified-Since"] = prev["last_modified"]
        return h

    def _limit(self, what: str) -> None:
        if what not in self.limit_hit:
            self.limit_hit.append(what)
            self.store.set_meta("limit_hit", self.limit_hit)

    # ------------------------------------------------------------------ callbacks
    def parse_sitemap(self, response: Response):
        """Sitemap index -> more sitemaps; urlset -> product / category pages."""
        self.store.put_page(response.url, response.status, len(response.body), None)
        depth = response.meta.get("tailor_depth", 0)
        try:
            sm = Sitemap(response.body)
        except Exception as exc:  # not XML at all
            self._fail(response.url, "sitemap", f"unparseable sitemap: {exc}", response.status)
            return
        for entry in sm:
            loc = (entry.get("loc") or "").strip()
            if not loc:
                continue
            if sm.type == "sitemapindex":
                req = self.page_request(loc, depth + 1, callback=self.parse_sitemap, kind="sitemap")
            else:
                req = self.page_request(loc, depth + 1, priority=10)
            if req is not None:
                yield req

    def parse_page(self, response: Response):
        """Extract a product (if any) and follow links."""
        req_url = response.request.url if response.request else response.url
        origin = (response.meta.get("redirect_urls") or [req_url])[0]
        if response.status == 304:
            yield from self._not_modified(origin, response)
            return
        ctype = (_header(response, "Content-Type") or "").lower()
        if "html" not in ctype and "xml" not in ctype:
            self._fail(origin, "content_type", f"page Content-Type {ctype!r} is not HTML", response.status)
            return
        html = response.text
        product = None
        try:
            product = extract_product(html, response.url, self.cfg.extractor, self.cfg.selectors)
        except ExtractionError as exc:
            self._fail(response.url, "extraction", str(exc), response.status)
        except Exception as exc:  # an extractor bug must not stop the crawl
            self._fail(response.url, "extraction", f"{type(exc).__name__}: {exc}", response.status)
        pid = None
        if product is not None:
            pid = self.product_id(product.sku, response.url)
            row = product.as_dict()
            row.update(
                product_id=pid,
                mall=self.cfg.name,
                page_url=response.url,
                fetched_at=time.time(),
                etag=_header(response, "ETag"),
                last_modified=_header(response, "Last-Modified"),
                status="fetched",
                removed=0,
            )
            self.store.put_product(row)
            for img in product.image_urls:
                req = self.image_request(img, pid)
                if req is not None:
                    yield req
        for u in {origin, response.url}:
            self.store.put_page(u, response.status, len(response.body), pid)
        depth = response.meta.get("tailor_depth", 0)
        for link in page_links(html, response.url, self.cfg.selectors if self.cfg.extractor == "css" else None):
            req = self.page_request(link, depth + 1)
            if req is not None:
                yield req

    def _not_modified(self, url: str, response: Response):
        prev = self.prev_by_url.get(url)
        if prev is None:  # cannot happen unless the state changed under us: refetch
            self._fail(url, "state", "304 for a page without a stored record", 304)
            return
        row = dict(prev)
        row.update(status="not_modified", removed=0)
        self.store.put_product(row)
        self.store.put_page(url, 304, 0, prev["product_id"])
        self.crawler.stats.inc_value("tailor/not_modified_pages")
        for img in prev["image_urls"]:
            req = self.image_request(img, prev["product_id"])
            if req is not None:
                yield req

    async def parse_image(self, response: Response) -> None:
        """Check headers, decode under guard, store by sha256; reject into failures.

        Decoding and hashing run in a worker thread: Pillow releases the GIL while it
        decodes, so image work overlaps the reactor's networking on the other core.
        """
        url = (response.meta.get("redirect_urls") or [response.request.url])[0] if response.request else response.url
        pid = response.meta.get("product_id")
        if response.status == 304 and url in self.prev_images:
            row = dict(self.prev_images[url])
            row["status"] = "not_modified"
            self.store.put_image(row)
            self.crawler.stats.inc_value("tailor/not_modified_images")
            return
        length = _header(response, "Content-Length")
        try:
            check_headers(
                _header(response, "Content-Type"),
                int(length) if length and length.isdigit() else len(response.body),
                self.pol.max_image_bytes,
            )
            info = await asyncio.to_thread(self._decode_and_store, response.body)
        except ImageRejected as exc:
            self._fail(url, exc.kind, exc.reason, response.status, pid)
            return
        row = info.as_dict()
        row.update(
            url=url,
            ext=info.ext,
            fetched_at=time.time(),
            etag=_header(response, "ETag"),
            last_modified=_header(response, "Last-Modified"),
            status="fetched",
        )
        self.store.put_image(row)
        self.crawler.stats.inc_value("tailor/images_stored")

    def _decode_and_store(self, body: bytes) -> ImageInfo:
        """Worker-thread part of an image: guarded decode, then the content-addressed write."""
        info = decode(body, self.pol.max_image_bytes)
        store_blob(self.blobs, info, body)
        return info

    # ------------------------------------------------------------------ failures
    def product_id(self, sku: str | None, url: str) -> str:
        """Stable id: ``<mall>:<sku>``, or ``<mall>:<url path>`` when there is no SKU."""
        if sku:
            return f"{self.cfg.name}:{sku}"
        parts = urlsplit(url)
        return f"{self.cfg.name}:{parts.path}{'?' + parts.query if parts.query else ''}"

    def _fail(self, url: str, kind: str, reason: str, status: int | None = None, product_id: str | None = None) -> None:
        self.crawler.stats.inc_value(f"tailor/failures/{kind}")
        self.store.put_failure(
            {
                "url": url,
                "kind": kind,
                "mall": self.cfg.name,
                "reason": reason,
                "status": status,
                "product_id": product_id,
            }
        )

    def on_error(self, failure: Any) -> None:
        """Turn any request failure into a failures row (never raise)."""
        req = failure.request
        exc = failure.value
        url = (req.meta.get("redirect_urls") or [req.url])[0]
        pid = req.meta.get("product_id")
        gave_up = req.meta.get("tailor_retry_gave_up", "")
        status = None
        if isinstance(exc, HttpError):
            status = exc.response.status
            kind, reason = "http", f"HTTP {status}" + (f"; {gave_up}" if gave_up else "")
            prev = self.prev_by_url.get(url)
            if status in (404, 410) and prev is not None:
                # The page is gone: the product stays in the snapshot, flagged removed.
                row = dict(prev)
                row.update(status="gone", removed=1)
                self.store.put_product(row)
                self.store.put_page(url, status, 0, prev["product_id"])
        elif isinstance(exc, RobotsDenied):
            kind, reason = "robots", str(exc)
        elif isinstance(exc, OutOfScope):
            kind, reason = "scope", str(exc)
        elif "max size" in str(exc) or "maxsize" in str(exc).lower():
            # over the kind's cap, before or during decompression (Scrapy says "DOWNLOAD_MAXSIZE")
            kind, reason = "too_large", str(exc)
        elif isinstance(exc, IgnoreRequest) and "redirect" in str(exc):
            kind, reason = "redirect", f"{exc} (more than 5 hops)"
        elif isinstance(exc, IgnoreRequest):
            kind, reason = "ignored", str(exc) or type(exc).__name__
        elif isinstance(exc, TimeoutError | TCPTimedOutError):
            kind, reason = "timeout", f"{exc}; {gave_up}".strip("; ")
        else:
            kind, reason = "network", f"{type(exc).__name__}: {exc}; {gave_up}".strip("; ")
        self._fail(url, kind, reason, status, pid)

    def closed(self, reason: str) -> None:
        """Record how the crawl ended (a limit or the time budget makes it incomplete)."""
        if reason == "closespider_timeout":
            self._limit("time_budget")
        stats = {k: v for k, v in self.crawler.stats.get_stats().items() if isinstance(v, int | float | str)}
        self.store.set_meta("scrapy_stats", stats)
        self.store.set_meta("close_reason", reason)
        self.store.set_meta("finished_at", time.time())
        self.store.set_meta("finished", reason == "finished" or reason == "closespider_timeout")
        self.store.close()
        self.state.close()
