"""Where a crawl may send requests: scheme, host and address checks for every request.

A product page is written by the mall's operator, so every URL in it is untrusted: an
image URL could be ``file:///dev/zero``, the cloud metadata service
(``http://169.254.169.254/``) or a service inside the platform (``http://127.0.0.1:5000/``),
and a redirect could lead anywhere. :func:`refusal` says why a URL must not be requested;
:class:`ScopeMiddleware` applies it to every request Scrapy is about to send: pages,
sitemaps, images, robots.txt and each hop of a redirect (the redirect middleware hands each
hop back to the engine as a new request, which passes through here again).

Rules:

- only ``http`` and ``https``;
- the host must be one of the mall's ``allowed_domains`` (or a subdomain), plus, for images
  only, its ``image_hosts`` (CDNs);
- a host that is, or resolves to, a loopback, private, link-local or otherwise non-public
  address is refused unless the mall sets ``allow_private_addresses`` (the demo malls on
  127.0.0.1 do). Resolution happens just before the request; a name that resolves to a
  public address first and a private one later (DNS rebinding) is outside what this checks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from scrapy import Request
from scrapy.exceptions import IgnoreRequest

#: Request kinds (``meta["tailor_kind"]``) that may also use the mall's ``image_hosts``.
IMAGE_KINDS = frozenset({"image"})


class OutOfScope(IgnoreRequest):
    """A request the mall's scope forbids; the spider records it as a ``scope`` failure."""


def host_matches(host: str, domains: Iterable[str]) -> bool:
    """Whether ``host`` is one of ``domains`` or a subdomain of one (case-insensitive)."""
    host = host.lower().rstrip(".")
    return any(host == d.lower() or host.endswith("." + d.lower()) for d in domains if d)


def non_public(address: str) -> bool:
    """Whether an IP address is loopback, private, link-local, multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def refusal(url: str, hosts: Iterable[str], allow_private: bool, addresses: Iterable[str] | None = None) -> str | None:
    """Why ``url`` must not be requested, or None when it may be.

    ``hosts`` are the allowed host names; ``addresses`` are what the host resolves to
    (None: not resolved; an IP literal is checked as itself).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or 'missing'!r} is not http(s)"
    host = (parts.hostname or "").lower()
    if not host:
        return "no host"
    if not host_matches(host, hosts):
        return f"host {host!r} is outside the mall's allowed hosts {sorted(set(hosts))}"
    if allow_private:
        return None
    try:
        literal = [str(ipaddress.ip_address(host))]
    except ValueError:
        literal = []
    for addr in literal or list(addresses or ()):
        if non_public(addr):
            return (
                f"host {host!r} is a non-public address ({addr}); set allow_private_addresses for this mall to crawl it"
            )
    return None


class ScopeMiddleware:
    """Downloader middleware: raise :class:`OutOfScope` for any request :func:`refusal` forbids.

    Settings: ``TAILOR_ALLOWED_DOMAINS``, ``TAILOR_IMAGE_HOSTS`` (lists) and
    ``TAILOR_ALLOW_PRIVATE`` (bool), written by :func:`pipelines.crawl.run.scrapy_settings`.
    """

    def __init__(self, crawler: Any) -> None:
        s = crawler.settings
        self.crawler = crawler
        self.domains: list[str] = list(s.getlist("TAILOR_ALLOWED_DOMAINS"))
        self.image_hosts: list[str] = list(s.getlist("TAILOR_IMAGE_HOSTS"))
        self.allow_private: bool = s.getbool("TAILOR_ALLOW_PRIVATE", False)
        self._resolved: dict[str, list[str]] = {}

    @classmethod
    def from_crawler(cls, crawler: Any) -> ScopeMiddleware:
        """Scrapy factory."""
        return cls(crawler)

    async def _addresses(self, host: str, port: int) -> list[str]:
        if host not in self._resolved:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                self._resolved[host] = sorted({str(i[4][0]) for i in infos})
            except OSError:
                self._resolved[host] = []  # the download fails on the same lookup: a network failure
        return self._resolved[host]

    async def process_request(self, request: Request) -> None:
        """Refuse out-of-scope requests before anything is sent."""
        hosts = self.domains + (self.image_hosts if request.meta.get("tailor_kind") in IMAGE_KINDS else [])
        why = refusal(request.url, hosts, True)  # scheme and host first: no lookup for those
        if why is None and not self.allow_private:
            parts = urlsplit(request.url)
            host = parts.hostname or ""
            addresses = await self._addresses(host, parts.port or (443 if parts.scheme == "https" else 80))
            why = refusal(request.url, hosts, False, addresses)
        if why is not None:
            self.crawler.stats.inc_value("tailor/out_of_scope")
            raise OutOfScope(why)
        return None
