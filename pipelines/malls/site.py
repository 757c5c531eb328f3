"""The catalogue model of a demo mall and its request routing.

A :class:`Mall` is a pure description (listings, markup, fault plan, robots mode,
revision) plus a cache of rendered pages; :meth:`Mall.handle` turns one request into a
:class:`Response`. The HTTP server (``server.py``) stays thin: it only moves bytes and
keeps per-server state (request logs, fault counters).
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from pipelines.malls import markup as mk
from pipelines.malls.faults import FaultConfig, FaultPlan, FaultState, stable_hash

#: Date of revision 0; revision r is dated BASE_DATE + r days (deterministic Last-Modified).
BASE_DATE = datetime(2024, 1, 1, tzinfo=UTC)
ROBOTS_MODES = (200, 404, 500, 503, "unreachable")


def slugify(text: str) -> str:
    """Lower-case ASCII slug for URLs (``"Not sure"`` -> ``"not-sure"``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "item"


@dataclass(frozen=True)
class ImageRef:
    """An image served at ``/img/<name>`` from ``path`` on disk (never copied)."""

    name: str
    path: Path
    role: str = "shop"

    @property
    def url_path(self) -> str:
        """The image's path on the mall (``/img/<name>``)."""
        return f"/img/{quote(self.name)}"


@dataclass
class Listing:
    """One product as one mall lists it (revision 0)."""

    pid: str
    category: str
    title: str
    brand: str
    price: float
    currency: str
    description: str
    attributes: dict[str, str]
    images: list[ImageRef]
    primary: bool = True  # False: this is the second mall's copy of a shared product

    @property
    def slug(self) -> str:
        """URL slug, frozen at revision 0 so product URLs stay stable across revisions."""
        return slugify(self.title)[:60].strip("-")

    @property
    def path(self) -> str:
        """Canonical product page path ``/p/<product_id>-<slug>``."""
        return f"/p/{quote(self.pid)}-{self.slug}"


@dataclass
class ProductState:
    """A listing's state at some revision."""

    title: str
    price: float
    lastmod_rev: int = 0  # last revision that changed it
    removed_rev: int | None = None  # revision it was removed at (None: still listed)


@dataclass
class Response:
    """One HTTP answer. ``drop`` closes the connection without answering."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    last_modified: datetime | None = None
    delay_s: float = 0.0
    drop: bool = False

    @property
    def etag(self) -> str | None:
        """Strong ETag of a 200 body (hash of content)."""
        if self.status != 200:
            return None
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def all_headers(self) -> dict[str, str]:
        """Headers to send (Content-Type, ETag, Last-Modified plus extras)."""
        out = {"Content-Type": self.content_type}
        etag = self.etag
        if etag:
            out["ETag"] = etag
        if self.last_modified is not None:
            out["Last-Modified"] = email.utils.format_datetime(self.last_modified, usegmt=True)
        out.update(self.headers)
        return out


def _not_modified(resp: Response, headers: Mapping[str, str]) -> bool:
    """RFC 9110 precedence: If-None-Match wins; If-Modified-Since only without it."""
    if resp.status != 200:
        return False
    inm = headers.get("If-None-Match")
    if inm:
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or (resp.etag or "") in tags
    ims = headers.get("If-Modified-Since")
    if ims and resp.last_modified is not None:
        try:
            since = email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return resp.last_modified <= since
    return False


def rank_pick(ids: list[str], rate: float, *key: object) -> set[str]:
    """Deterministically pick ``max(1, round(rate*n))`` ids (none if rate is 0)."""
    if rate <= 0 or not ids:
        return set()
    want = max(1, round(rate * len(ids)))
    return set(sorted(ids, key=lambda i: stable_hash(*key, i))[:want])


class _ImageCache:
    """Byte-budgeted LRU of image file contents (images are read once, then served from RAM)."""

    def __init__(self, budget: int = 256 * 2**20) -> None:
        self._data: OrderedDict[Path, bytes] = OrderedDict()
        self._size = 0
        self._budget = budget
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes:
        with self._lock:
            if path in self._data:
                self._data.move_to_end(path)
                return self._data[path]
        data = path.read_bytes()
        with self._lock:
            if path not in self._data:
                self._data[path] = data
                self._size += len(data)
                while self._size > self._budget and len(self._data) > 1:
                    _, old = self._data.popitem(last=False)
                    self._size -= len(old)
        return data


class Mall:
    """One demo shop: its listings, markup, robots mode, revision and faults.

    Pages are rendered on first request and cached per (revision, host, path), so serving
    is a dictionary lookup. ``revision``, ``robots_status`` and ``robots_redirects`` can be
    changed at runtime.
    """

    def __init__(
        self,
        name: str,
        markup: str,
        listings: list[Listing],
        *,
        seed: int = 0,
        faults: FaultConfig | None = None,
        crawl_delay: float = 1.0,
        per_page: int = 12,
        change_rate: float = 0.1,
        remove_rate: float = 0.05,
        robots_status: int | str = 200,
        robots_redirects: int = 0,
        price_style: str = "symbol_first",
    ) -> None:
        if markup not in mk.MARKUPS:
            raise ValueError(f"unknown markup {markup!r}")
        self.name = name
        self.markup = markup
        self.seed = seed
        self.crawl_delay = crawl_delay
        self.per_page = per_page
        self.change_rate = change_rate
        self.remove_rate = remove_rate
        self.robots_status: int | str = robots_status
        self.robots_redirects = robots_redirects
        self.price_style = price_style
        self.listings: dict[str, Listing] = {lst.pid: lst for lst in sorted(listings, key=lambda x: x.pid)}
        #: product id -> names of the other malls that list the same product.
        self.shared_with: dict[str, list[str]] = {}
        self.images: dict[str, ImageRef] = {}
        for lst in self.listings.values():
            for img in lst.images:
                self.images[img.name] = img
        self._by_path = {lst.path: lst.pid for lst in self.listings.values()}
        cats = sorted({lst.category for lst in self.listings.values()})
        self.categories: dict[str, str] = {}  # slug -> category name
        for c in cats:
            slug = slugify(c)
            while slug in self.categories:  # two labels with one slug: keep both reachable
                slug += "-x"
            self.categories[slug] = c
        self._cat_slug = {c: s for s, c in self.categories.items()}
        self.fault_config = faults or FaultConfig()
        self.faults = FaultPlan.build(self.fault_config, list(self.listings), list(self.images), seed, name)
        self.revision = 0
        self._lock = threading.Lock()
        self._states: dict[int, dict[str, ProductState]] = {}
        self._pages: dict[tuple[int, str, str], Response] = {}
        self._images = _ImageCache()

    # ------------------------------------------------------------------ catalogue state
    def __repr__(self) -> str:
        return f"Mall({self.name!r}, markup={self.markup!r}, products={len(self.listings)})"

    def set_revision(self, revision: int) -> None:
        """Switch the catalogue to ``revision`` (0 = as generated); takes effect at once."""
        if revision < 0:
            raise ValueError("revision must be >= 0")
        self.states(revision)  # compute before switching, so requests never see half a table
        self.revision = revision

    def states(self, revision: int | None = None) -> dict[str, ProductState]:
        """Every listing's state at ``revision`` (default: current), removed ones included."""
        r = self.revision if revision is None else revision
        with self._lock:
            if r in self._states:
                return self._states[r]
        table = {pid: ProductState(lst.title, lst.price) for pid, lst in self.listings.items()}
        for rr in range(1, r + 1):
            active = [pid for pid, s in table.items() if s.removed_rev is None]
            removed = rank_pick(active, self.remove_rate, self.seed, self.name, "remove", rr)
            changed = rank_pick(
                [p for p in active if p not in removed], self.change_rate, self.seed, self.name, "change", rr
            )
            for pid in removed:
                table[pid] = replace(table[pid], removed_rev=rr)
            for pid in changed:
                s, base = table[pid], self.listings[pid]
                table[pid] = replace(
                    s, title=f"{base.title} - edition {rr}", price=round(max(1.0, s.price * 0.9), 2), lastmod_rev=rr
                )
        with self._lock:
            self._states[r] = table
        return table

    def changed_at(self, revision: int) -> set[str]:
        """Product ids whose title/price changed exactly at ``revision``."""
        return {
            p
            for p, s in self.states(revision).items()
            if s.lastmod_rev == revision and revision > 0 and s.removed_rev is None
        }

    def removed_at(self, revision: int) -> set[str]:
        """Product ids removed exactly at ``revision``."""
        return {p for p, s in self.states(revision).items() if s.removed_rev == revision}

    def diff(self, revision: int, since: int = 0) -> dict[str, set[str]]:
        """``{"changed": ..., "removed": ...}`` between ``since`` and ``revision``."""
        old, new = self.states(since), self.states(revision)
        removed = {p for p, s in new.items() if s.removed_rev is not None and old[p].removed_rev is None}
        changed = {
            p for p, s in new.items() if s.removed_rev is None and (s.title, s.price) != (old[p].title, old[p].price)
        }
        return {"changed": changed, "removed": removed}

    def active_ids(self, revision: int | None = None) -> list[str]:
        """Product ids listed at ``revision`` (default: current), sorted."""
        return sorted(p for p, s in self.states(revision).items() if s.removed_rev is None)

    def gone_status(self, pid: str) -> int:
        """The status a removed product's page answers: 410 or 404 (deterministic)."""
        return 410 if stable_hash(self.seed, self.name, "gone", pid) < 0.5 else 404

    def product_url(self, pid: str, base: str = "") -> str:
        """Canonical product page URL (``base`` like ``http://127.0.0.1:8001``)."""
        return base + self.listings[pid].path

    def link_path(self, pid: str) -> str:
        """The path listings link to: the product page, or the start of a redirect chain."""
        if pid in self.faults.redirect_hops:
            return f"/r/{quote(pid)}/1"
        return self.listings[pid].path

    def category_path(self, category: str) -> str:
        """Path of a category's first listing page."""
        return f"/c/{self._cat_slug[category]}"

    def category_pages(self, category: str, revision: int | None = None) -> int:
        """Number of listing pages of ``category`` at ``revision``."""
        n = sum(1 for p in self.active_ids(revision) if self.listings[p].category == category)
        return max(1, -(-n // self.per_page))

    def expected_faults(self) -> dict[str, Any]:
        """Faulty product ids / image names per kind with parameters (see FaultPlan.describe)."""
        desc = self.faults.describe()
        desc["product_paths"] = {k: sorted(self.listings[p].path for p in v) for k, v in self.faults.products.items()}
        desc["image_paths"] = {k: sorted(self.images[n].url_path for n in v) for k, v in self.faults.images.items()}
        return desc

    def robots_txt(self, base: str) -> str:
        """The robots.txt body (normal mode)."""
        delay = int(self.crawl_delay) if float(self.crawl_delay).is_integer() else self.crawl_delay
        return (
            "User-agent: *\nDisallow: /cart\nDisallow: /account\nDisallow: /search\n"
            f"Crawl-delay: {delay}\n\nSitemap: {base}/sitemap.xml\n"
        )

    # ------------------------------------------------------------------ rendering
    def _nav(self) -> list[tuple[str, str]]:
        return [(c, f"/c/{s}") for s, c in self.categories.items()]

    def _revision_date(self, revision: int) -> datetime:
        return BASE_DATE + timedelta(days=revision)

    def _view(self, pid: str, base: str, state: ProductState) -> mk.ProductView:
        lst = self.listings[pid]
        return mk.ProductView(
            pid=pid,
            title=state.title,
            brand=lst.brand,
            category=lst.category,
            category_path=self.category_path(lst.category),
            price=state.price,
            currency=lst.currency,
            description=lst.description,
            url=base + lst.path,
            image_urls=[base + i.url_path for i in lst.images],
            image_paths=[i.url_path for i in lst.images],
            attributes=dict(lst.attributes),
        )

    def _render(self, path: str, query: dict[str, list[str]], base: str) -> Response | None:
        """Render a cacheable page (None: not a page of this mall)."""
        r = self.revision
        states = self.states(r)
        rev_date = self._revision_date(r)
        if path == "/":
            return Response(200, mk.render_home(self.name, self._nav()).encode(), last_modified=rev_date)
        if path.startswith("/c/"):
            cat = self.categories.get(path[3:])
            if cat is None:
                return None
            try:
                page = int(query.get("page", ["1"])[0])
            except ValueError:
                return None
            pids = [p for p in self.active_ids(r) if self.listings[p].category == cat]
            pages = max(1, -(-len(pids) // self.per_page))
            if not 1 <= page <= pages:
                return None
            chunk = pids[(page - 1) * self.per_page : page * self.per_page]
            cards = [
                mk.CardView(
                    states[p].title,
                    self.link_path(p),
                    states[p].price,
                    self.listings[p].currency,
                    self.listings[p].images[0].url_path if self.listings[p].images else "",
                )
                for p in chunk
            ]
            html = mk.render_listing(self.name, self._nav(), cat, cards, page, pages, path)
            return Response(200, html.encode(), last_modified=rev_date)
        if path == "/sitemap.xml":
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                + "".join(
                    f"<sitemap><loc>{base}/{n}</loc><lastmod>{rev_date.date()}</lastmod></sitemap>\n"
                    for n in ("sitemap-products.xml", "sitemap-categories.xml")
                )
                + "</sitemapindex>\n"
            )
            return Response(200, body.encode(), "application/xml", last_modified=rev_date)
        if path in ("/sitemap-products.xml", "/sitemap-categories.xml"):
            if path == "/sitemap-products.xml":
                entries = [
                    (base + self.listings[p].path, self._revision_date(states[p].lastmod_rev))
                    for p in self.active_ids(r)
                ]
            else:
                entries = [(f"{base}/c/{s}", rev_date) for s in self.categories]
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                + "".join(f"<url><loc>{_xml(u)}</loc><lastmod>{d.date()}</lastmod></url>\n" for u, d in entries)
                + "</urlset>\n"
            )
            return Response(200, body.encode(), "application/xml", last_modified=rev_date)
        if path.startswith("/p/"):
            pid = self._by_path.get(path)
            if pid is None:
                return None
            st = states[pid]
            if st.removed_rev is not None:
                code = self.gone_status(pid)
                html = mk.render_simple("Gone" if code == 410 else "Not found", "This product is no longer available.")
                return Response(code, html.encode())
            style = self.price_style if self.listings[pid].primary else "european"
            html = mk.render_product(self.markup, self.name, self._nav(), self._view(pid, base, st), style)
            return Response(200, html.encode(), last_modified=self._revision_date(st.lastmod_rev))
        return None

    def _page(self, path: str, query: dict[str, list[str]], base: str) -> Response | None:
        # Only the page query (listing) matters for content; key the cache on it.
        key = (self.revision, base, path + ("?" + query["page"][0] if "page" in query else ""))
        with self._lock:
            hit = self._pages.get(key)
        if hit is not None:
            return hit
        resp = self._render(path, query, base)
        if resp is not None:
            with self._lock:
                self._pages[key] = resp
        return resp

    # ------------------------------------------------------------------ routing
    def handle(self, method: str, target: str, headers: Mapping[str, str], host: str, state: FaultState) -> Response:
        """Answer one request (``target`` is the raw request path with query).

        ``host`` is the Host header value (builds absolute URLs); ``state`` holds this
        server's fault counters.
        """
        base = f"http://{host}"
        parts = urlsplit(target)
        path = unquote(parts.path) if parts.path.startswith("/img/") else parts.path
        query = parse_qs(parts.query)
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed", "text/plain", headers={"Allow": "GET, HEAD"})
        if path == "/robots.txt" or path.startswith("/robots-hop/"):
            return self._robots(path, base, headers)
        if path.startswith("/img/"):
            return self._image(path[5:], headers, state)
        if path.startswith("/r/"):
            return self._redirect(path, base)
        if path in ("/cart", "/search") or path.startswith("/account"):
            # Disallowed by robots.txt but answered, so a rude crawler shows up in the log.
            return Response(200, mk.render_simple(path.strip("/").title(), "Not for robots.").encode())
        resp = self._page(path, query, base)
        if resp is None:
            return Response(404, mk.render_simple("Not found", path).encode())
        if path.startswith("/p/") and resp.status == 200:
            pid = self._by_path[path]
            fault = self.faults.product_fault(pid)
            cfg = self.fault_config
            if fault == "not_found":
                return Response(404, mk.render_simple("Not found", path).encode())
            if fault == "error_burst" and state.hit("burst:" + path) < cfg.burst_len:
                code = self.faults.burst_status[pid]
                return Response(
                    code,
                    mk.render_simple("Server error", "try again").encode(),
                    headers={"Retry-After": "0"} if code == 503 else {},
                )
            if fault == "rate_limit" and state.hit("429:" + path) < 1:
                return Response(
                    429,
                    mk.render_simple("Too many requests", "slow down").encode(),
                    headers={"Retry-After": str(cfg.retry_after_s)},
                )
            if fault == "slow":
                resp = replace(resp, delay_s=cfg.slow_s)
        if _not_modified(resp, headers):
            return Response(
                304,
                b"",
                resp.content_type,
                headers={"ETag": resp.etag or ""},
                last_modified=resp.last_modified,
                delay_s=resp.delay_s,
            )
        return resp

    def _robots(self, path: str, base: str, headers: Mapping[str, str]) -> Response:
        hop = 0 if path == "/robots.txt" else int(path.rsplit("/", 1)[-1] or 0)
        if hop < self.robots_redirects:
            code = 301 if hop % 2 == 0 else 302
            return Response(code, b"", "text/plain", headers={"Location": f"{base}/robots-hop/{hop + 1}"})
        mode = self.robots_status
        if mode == "unreachable":
            return Response(0, drop=True)
        if int(mode) != 200:
            return Response(int(mode), f"robots {mode}\n".encode(), "text/plain")
        resp = Response(200, self.robots_txt(base).encode(), "text/plain; charset=utf-8", last_modified=BASE_DATE)
        if _not_modified(resp, headers):
            return Response(304, b"", headers={"ETag": resp.etag or ""}, last_modified=BASE_DATE)
        return resp

    def _redirect(self, path: str, base: str) -> Response:
        m = re.fullmatch(r"/r/(.+)/(\d+)", path)
        pid = unquote(m.group(1)) if m else ""
        hops = self.faults.redirect_hops.get(pid)
        if not m or hops is None:
            return Response(404, mk.render_simple("Not found", path).encode())
        k = int(m.group(2))
        target = self.listings[pid].path if k >= hops else f"/r/{quote(pid)}/{k + 1}"
        return Response(301 if k % 2 else 302, b"", "text/plain", headers={"Location": base + target})

    def _image(self, name: str, headers: Mapping[str, str], state: FaultState) -> Response:
        img = self.images.get(name)
        if img is None:
            return Response(404, b"no such image", "text/plain")
        data = self._images.get(img.path)
        fault = self.faults.image_fault(name)
        ctype = "image/jpeg"
        if fault == "truncated_image":
            data = data[: max(1, int(len(data) * self.fault_config.truncate_fraction))]
        elif fault == "wrong_content_type":
            if self.faults.wrong_type_variant[name] == "header":
                ctype = "text/html; charset=utf-8"
            else:
                data = mk.render_simple("Image", "this is not an image").encode()
        resp = Response(200, data, ctype, last_modified=BASE_DATE, headers={"Cache-Control": "public, max-age=3600"})
        if _not_modified(resp, headers):
            return Response(304, b"", ctype, headers={"ETag": resp.etag or ""}, last_modified=BASE_DATE)
        return resp


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
