"""Product extraction from one HTML page, per extractor kind.

``extract_product`` returns a :class:`ProductData` when the page describes a product, None
when it does not (a listing, the home page), and raises :class:`ExtractionError` when the
page claims to be a product but cannot be read (the crawler records that as a failure).
JSON-LD, microdata and OpenGraph go through extruct; the ``css`` extractor uses parsel
selectors from the malls file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urljoin

import parsel


class ExtractionError(Exception):
    """A product page whose data is unusable (no title, unparseable structured data ...)."""


@dataclass
class ProductData:
    """The fields a mall exposes for one product (all optional except title)."""

    title: str
    url: str
    sku: str | None = None
    brand: str | None = None
    price: float | None = None
    currency: str | None = None
    category: str | None = None
    description: str | None = None
    image_urls: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


def _first(v: Any) -> Any:
    if isinstance(v, list):
        return v[0] if v else None
    return v


def _text(v: Any) -> str | None:
    v = _first(v)
    if isinstance(v, dict):  # {"@type": "Brand", "name": ...}
        v = v.get("name") or v.get("@value")
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def parse_price(text: Any, regex: str | None = None) -> float | None:
    """``49.90`` / ``"€49.90"`` / ``"49,90 €"`` -> 49.9 (None when absent or unreadable)."""
    if text is None:
        return None
    if isinstance(text, int | float):
        return float(text)
    s = str(text)
    m = re.search(regex or r"([0-9]+(?:[.,][0-9]{1,2})?)", s.replace("\u00a0", " "))
    if not m:
        return None
    try:
        return float(m.group(1).replace(",", "."))
    except ValueError:
        return None


def _images(v: Any, base: str) -> list[str]:
    items = v if isinstance(v, list) else [v] if v else []
    out = []
    for it in items:
        if isinstance(it, dict):
            it = it.get("url") or it.get("contentUrl") or it.get("@id")
        if it:
            out.append(urljoin(base, str(it).strip()))
    return list(dict.fromkeys(out))


def _is_product(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    t = item.get("@type")
    types = t if isinstance(t, list) else [t]
    return any(str(x).rsplit("/", 1)[-1] == "Product" for x in types if x)


def _find_product(items: list[Any]) -> dict[str, Any] | None:
    stack = list(items)
    while stack:
        it = stack.pop(0)
        if _is_product(it):
            return it
        if isinstance(it, dict) and isinstance(it.get("@graph"), list):
            stack.extend(it["@graph"])
        elif isinstance(it, list):
            stack.extend(it)
    return None


def _from_schema(item: dict[str, Any], url: str) -> ProductData:
    """schema.org Product (JSON-LD or extruct's uniform microdata) -> ProductData."""
    offers = _first(item.get("offers")) or {}
    if not isinstance(offers, dict):
        offers = {}
    props = item.get("additionalProperty") or []
    props = props if isinstance(props, list) else [props]
    attrs = {
        str(p.get("name")).strip(): str(_first(p.get("value"))).strip()
        for p in props
        if isinstance(p, dict) and p.get("name") is not None
    }
    title = _text(item.get("name"))
    if not title:
        raise ExtractionError("Product without a name")
    return ProductData(
        title=title,
        url=_text(item.get("url")) or _text(offers.get("url")) or url,
        sku=_text(item.get("sku")) or _text(item.get("productID")) or _text(item.get("mpn")),
        brand=_text(item.get("brand")),
        price=parse_price(_first(offers.get("price"))),
        currency=_text(offers.get("priceCurrency")),
        category=_text(item.get("category")),
        description=_text(item.get("description")),
        image_urls=_images(item.get("image"), url),
        attributes=attrs,
    )


def _jsonld(html: str, url: str) -> ProductData | None:
    from extruct.jsonld import JsonLdExtractor

    try:
        items = JsonLdExtractor().extract(html, base_url=url)
    except (ValueError, TypeError) as exc:  # malformed JSON in a ld+json script
        raise ExtractionError(f"unparseable JSON-LD: {exc}") from None
    item = _find_product(items)
    return _from_schema(item, url) if item else None


def _opengraph(html: str, url: str) -> ProductData | None:
    import extruct

    data = extruct.extract(html, base_url=url, syntaxes=["opengraph"], uniform=False)["opengraph"]
    pairs: list[tuple[str, str]] = []
    for block in data:
        pairs.extend((k, v) for k, v in block.get("properties", []))
    og = dict(pairs)
    og_type = (og.get("og:type") or "").lower()
    if og_type not in ("product", "og:product", "product.item") and "product:price:amount" not in og:
        return None
    title = (og.get("og:title") or "").strip()
    if not title:
        raise ExtractionError("OpenGraph product without og:title")
    return ProductData(
        title=title,
        url=og.get("og:url") or url,
        sku=og.get("product:retailer_item_id"),
        brand=og.get("product:brand"),
        price=parse_price(og.get("product:price:amount")),
        currency=og.get("product:price:currency"),
        category=og.get("product:category"),
        description=og.get("og:description"),
        image_urls=_images([v for k, v in pairs if k in ("og:image", "og:image:url")], url),
    )


def _microdata(html: str, url: str) -> ProductData | None:
    import extruct

    items = extruct.extract(html, base_url=url, syntaxes=["microdata"], uniform=True)["microdata"]
    item = _find_product(items)
    if item is None:
        return _opengraph(html, url)  # microdata-less pages may still carry OpenGraph
    prod = _from_schema(item, url)
    if not prod.image_urls or prod.price is None:
        og = _opengraph(html, url)  # fill gaps from OpenGraph tags of the same page
        if og:
            prod.image_urls = prod.image_urls or og.image_urls
            prod.price = prod.price if prod.price is not None else og.price
            prod.currency = prod.currency or og.currency
    return prod


def _css(html: str, url: str, sel: dict[str, str]) -> ProductData | None:
    page = parsel.Selector(text=html)

    def one(key: str) -> str | None:
        q = sel.get(key)
        v = page.css(q).get() if q else None
        return v.strip() if v and v.strip() else None

    title = one("title")
    if title is None:
        return None  # not a product page
    names = [n.strip() for n in page.css(sel["attr_names"]).getall()] if sel.get("attr_names") else []
    values = [v.strip() for v in page.css(sel["attr_values"]).getall()] if sel.get("attr_values") else []
    if len(names) != len(values):
        raise ExtractionError(f"{len(names)} attribute names but {len(values)} values")
    return ProductData(
        title=title,
        url=url,
        sku=one("sku"),
        brand=one("brand"),
        price=parse_price(one("price"), sel.get("price_regex")),
        currency=one("currency"),
        category=one("category"),
        description=one("description"),
        image_urls=_images(page.css(sel["images"]).getall(), url),
        attributes=dict(zip(names, values, strict=True)),
    )


def extract_product(html: str, url: str, extractor: str, selectors: dict[str, str] | None = None) -> ProductData | None:
    """The product described by ``html`` at ``url``, None when the page is not a product."""
    if extractor == "jsonld":
        return _jsonld(html, url)
    if extractor == "microdata":
        return _microdata(html, url)
    if extractor == "opengraph":
        return _opengraph(html, url)
    if extractor == "css":
        return _css(html, url, selectors or {})
    raise ValueError(f"unknown extractor {extractor!r}")


def page_links(html: str, url: str, selectors: dict[str, str] | None = None) -> list[str]:
    """Links to follow from a page: the configured link selectors, else every ``a[href]``."""
    page = parsel.Selector(text=html)
    sel = selectors or {}
    keys = [k for k in ("category_links", "product_links", "next_page") if sel.get(k)]
    raw = [h for k in keys for h in page.css(sel[k]).getall()] if keys else page.css("a::attr(href)").getall()
    out = []
    for h in raw:
        h = h.strip()
        if not h or h.startswith(("#", "mailto:", "javascript:", "tel:")):
            continue
        out.append(urljoin(url, h).split("#", 1)[0])
    return list(dict.fromkeys(out))


def to_json(d: dict[str, Any]) -> str:
    """Deterministic JSON text for attribute dicts."""
    return json.dumps(d, sort_keys=True, ensure_ascii=False)
