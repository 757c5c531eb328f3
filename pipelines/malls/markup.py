"""HTML rendering of mall pages, one flavour per markup.

Every mall shares the same site map (home, category listings, product pages) and differs
only in how a product page exposes its data:

* ``jsonld``    -- schema.org ``Product`` in ``<script type="application/ld+json">``;
* ``microdata`` -- schema.org microdata plus OpenGraph ``<meta property>`` tags;
* ``css``       -- plain HTML, no structured data: the crawler needs the CSS selectors in
  ``config/malls.yaml`` (:data:`CSS_SELECTORS` is the single source of those).

Renderers are pure functions of a :class:`ProductView`/listing data, so pages can be
pre-rendered and cached by the mall.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

MARKUPS = ("jsonld", "microdata", "css")

#: CSS selectors (parsel/Scrapy syntax) for the ``css`` markup; written to config/malls.yaml.
CSS_SELECTORS: dict[str, str] = {
    "category_links": "nav.categories a::attr(href)",
    "product_links": "ul.product-grid a.product-link::attr(href)",
    "next_page": "a.next-page::attr(href)",
    "title": "div.pdp h1.pdp-title::text",
    "price": "div.pdp span.pdp-price::text",
    "price_regex": r"([0-9]+(?:[.,][0-9]{1,2})?)",
    "currency": "div.pdp span.pdp-price::attr(data-currency)",
    "brand": "div.pdp span.pdp-brand::text",
    "sku": "div.pdp span.pdp-sku::text",
    "category": "nav.breadcrumb a.crumb-category::text",
    "description": "div.pdp div.pdp-desc::text",
    "images": "div.pdp ul.pdp-gallery img::attr(src)",
    "attr_names": "div.pdp dl.pdp-attrs dt::text",
    "attr_values": "div.pdp dl.pdp-attrs dd::text",
}

_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}
# Internal links a polite crawler must not follow (robots.txt disallows them).
_DISALLOWED_LINKS = (("/cart", "Cart"), ("/account/login", "Sign in"), ("/account/wishlist", "Wishlist"))


@dataclass
class ProductView:
    """What one product page shows at one revision (absolute URLs)."""

    pid: str
    title: str
    brand: str
    category: str
    category_path: str
    price: float
    currency: str
    description: str
    url: str
    image_urls: list[str]
    image_paths: list[str]
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class CardView:
    """One product card on a listing page."""

    title: str
    href: str
    price: float
    currency: str
    thumb: str


def format_price(price: float, currency: str, style: str = "symbol_first") -> str:
    """Human price text: ``€49.90`` (symbol_first) or ``49,90 €`` (european)."""
    sym = _SYMBOLS.get(currency, currency + " ")
    if style == "european":
        return f"{price:.2f}".replace(".", ",") + f" {sym.strip()}"
    return f"{sym}{price:.2f}"


def _page(title: str, body: str, head: str = "", html_attrs: str = "") -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"{html_attrs}>\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n{head}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _header(mall_name: str, categories: list[tuple[str, str]]) -> str:
    cats = "".join(f'<li><a href="{escape(path)}">{escape(name)}</a></li>' for name, path in categories)
    bad = "".join(f'<a class="util" href="{p}">{t}</a> ' for p, t in _DISALLOWED_LINKS)
    return (
        f'<header><a class="logo" href="/">{escape(mall_name)}</a> {bad}'
        f'<form class="search" action="/search" method="get"><input name="q"></form>'
        f'<a class="util" href="/search?q=sale">Sale</a></header>\n'
        f'<nav class="categories"><ul>{cats}</ul></nav>\n'
    )


def render_home(mall_name: str, categories: list[tuple[str, str]]) -> str:
    """Home page: links to every category listing plus some disallowed utility links."""
    body = _header(mall_name, categories) + f"<main><h1>Welcome to {escape(mall_name)}</h1></main>"
    return _page(mall_name, body)


def render_listing(
    mall_name: str,
    categories: list[tuple[str, str]],
    category: str,
    cards: list[CardView],
    page: int,
    pages: int,
    base_path: str,
) -> str:
    """A category listing page with product cards and prev/next pagination links."""
    items = "".join(
        f'<li class="product-card"><a class="product-link" href="{escape(c.href)}">'
        f'<img src="{escape(c.thumb)}" alt=""><span class="card-title">{escape(c.title)}</span></a>'
        f'<span class="card-price">{escape(format_price(c.price, c.currency))}</span></li>\n'
        for c in cards
    )
    nav, head = [], ""
    if page > 1:
        nav.append(f'<a class="prev-page" rel="prev" href="{base_path}?page={page - 1}">previous</a>')
    if page < pages:
        nav.append(f'<a class="next-page" rel="next" href="{base_path}?page={page + 1}">next</a>')
        head = f'<link rel="next" href="{base_path}?page={page + 1}">\n'
    body = (
        _header(mall_name, categories) + f'<main><h1 class="listing-title">{escape(category)}</h1>\n'
        f'<ul class="product-grid">\n{items}</ul>\n'
        f'<div class="pagination">page {page} of {pages} {" ".join(nav)}</div></main>'
    )
    return _page(f"{category} - {mall_name}", body, head)


def _jsonld(p: ProductView) -> str:
    data = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": p.title,
        "sku": p.pid,
        "productID": p.pid,
        "brand": {"@type": "Brand", "name": p.brand},
        "category": p.category,
        "image": p.image_urls,
        "description": p.description,
        "url": p.url,
        "offers": {
            "@type": "Offer",
            "price": round(p.price, 2),
            "priceCurrency": p.currency,
            "availability": "https://schema.org/InStock",
            "url": p.url,
        },
        "additionalProperty": [{"@type": "PropertyValue", "name": k, "value": v} for k, v in p.attributes.items()],
    }
    # "</" inside a script would end it early; JSON allows the escaped slash.
    return json.dumps(data, ensure_ascii=False, indent=1).replace("</", "<\\/")


def _breadcrumb(p: ProductView) -> str:
    return (
        f'<nav class="breadcrumb"><a href="/">Home</a> &rsaquo; '
        f'<a class="crumb-category" href="{escape(p.category_path)}">{escape(p.category)}</a>'
        f" &rsaquo; <span>{escape(p.title)}</span></nav>\n"
    )


def _utility(p: ProductView) -> str:
    return (
        f'<p class="actions"><a href="/cart?add={quote(p.pid)}">Add to cart</a> '
        f'<a href="/account/wishlist?add={quote(p.pid)}">Save</a> '
        f'<a href="/search?q={quote(p.category)}">More {escape(p.category)}</a></p>\n'
    )


def render_product(
    markup: str, mall_name: str, categories: list[tuple[str, str]], p: ProductView, price_style: str = "symbol_first"
) -> str:
    """A product page in the given markup (one of :data:`MARKUPS`)."""
    header = _header(mall_name, categories) + _breadcrumb(p)
    if markup == "jsonld":
        head = f'<script type="application/ld+json">\n{_jsonld(p)}\n</script>\n'
        gallery = "".join(f'<img src="{escape(u)}" alt="">' for u in p.image_urls)
        body = (
            header + f'<main class="product"><h1>{escape(p.title)}</h1>'
            f'<p class="price">{escape(format_price(p.price, p.currency, price_style))}</p>'
            f'<div class="gallery">{gallery}</div><p>{escape(p.description)}</p>' + _utility(p) + "</main>"
        )
        return _page(p.title, body, head)
    if markup == "microdata":
        og = [("og:type", "product"), ("og:title", p.title), ("og:url", p.url), ("og:description", p.description)]
        og += [("og:image", u) for u in p.image_urls]
        og += [
            ("product:price:amount", f"{p.price:.2f}"),
            ("product:price:currency", p.currency),
            ("product:category", p.category),
            ("product:brand", p.brand),
        ]
        head = "".join(f'<meta property="{k}" content="{escape(v)}">\n' for k, v in og)
        imgs = "".join(f'<img itemprop="image" src="{escape(u)}" alt="">' for u in p.image_urls)
        props = "".join(
            '<div itemprop="additionalProperty" itemscope itemtype="https://schema.org/PropertyValue">'
            f'<span itemprop="name">{escape(k)}</span>: <span itemprop="value">{escape(v)}</span></div>'
            for k, v in p.attributes.items()
        )
        body = (
            header + '<main itemscope itemtype="https://schema.org/Product">'
            f'<h1 itemprop="name">{escape(p.title)}</h1>'
            f'<meta itemprop="sku" content="{escape(p.pid)}">'
            '<div itemprop="brand" itemscope itemtype="https://schema.org/Brand">'
            f'<span itemprop="name">{escape(p.brand)}</span></div>'
            f'<span itemprop="category">{escape(p.category)}</span>'
            f'<div class="gallery">{imgs}</div>'
            '<div itemprop="offers" itemscope itemtype="https://schema.org/Offer">'
            f'<span itemprop="price" content="{p.price:.2f}">'
            f"{escape(format_price(p.price, p.currency, price_style))}</span>"
            f'<meta itemprop="priceCurrency" content="{escape(p.currency)}">'
            '<link itemprop="availability" href="https://schema.org/InStock">'
            f'<link itemprop="url" href="{escape(p.url)}"></div>'
            f'{props}<p itemprop="description">{escape(p.description)}</p>' + _utility(p) + "</main>"
        )
        prefix = ' prefix="og: http://ogp.me/ns# product: http://ogp.me/ns/product#"'
        return _page(p.title, body, head, html_attrs=prefix)
    if markup == "css":
        gallery = "".join(f'<li><img src="{escape(path)}" alt=""></li>' for path in p.image_paths)
        attrs = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in p.attributes.items())
        body = (
            header + '<div class="pdp">'
            f'<h1 class="pdp-title">{escape(p.title)}</h1>'
            f'<span class="pdp-brand">{escape(p.brand)}</span>'
            f'<span class="pdp-price" data-currency="{escape(p.currency)}">'
            f"{escape(format_price(p.price, p.currency, price_style))}</span>"
            f'<ul class="pdp-gallery">{gallery}</ul>'
            f'<dl class="pdp-attrs">{attrs}</dl>'
            f'<div class="pdp-desc">{escape(p.description)}</div>'
            f'<span class="pdp-sku">{escape(p.pid)}</span>' + _utility(p) + "</div>"
        )
        return _page(p.title, body)
    raise ValueError(f"unknown markup {markup!r}; expected one of {MARKUPS}")


def render_simple(title: str, text: str) -> str:
    """A minimal HTML page (error pages, cart, account, search)."""
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>")
