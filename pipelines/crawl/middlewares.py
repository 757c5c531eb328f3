"""Scrapy downloader middlewares: RFC 9309 robots.txt (fail closed) and polite retries.

Scrapy's own RobotsTxtMiddleware allows everything when robots.txt cannot be fetched;
RFC 9309 says a 5xx or an unreachable host means "assume complete disallow", so this one
fails closed. Scrapy's RetryMiddleware retries immediately; this one backs off
exponentially, honours ``Retry-After``, and gives up after a bounded count and time.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from protego import Protego
from scrapy import Request
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Response

from pipelines.crawl.snapshot import ROBOTS_DISALLOWED
from pipelines.crawl.state import Store

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 429, 500, 502, 503, 504, 522, 524}


class RobotsDenied(IgnoreRequest):
    """A request that robots.txt (or its absence by server error) forbids."""


@dataclass
class RobotsRules:
    """The outcome of fetching one host's robots.txt."""

    status: int  # HTTP status, 0 when unreachable / too many redirects
    parser: Protego | None  # None: allow all (4xx) or disallow all (5xx/unreachable)
    allow_all: bool
    reason: str

    def allowed(self, url: str, ua: str) -> bool:
        """Whether ``ua`` may fetch ``url``."""
        if self.parser is not None:
            return bool(self.parser.can_fetch(url, ua))
        return self.allow_all

    def crawl_delay(self, ua: str) -> float | None:
        """The Crawl-delay for ``ua`` (None when absent)."""
        if self.parser is None:
            return None
        d = self.parser.crawl_delay(ua)
        return float(d) if d is not None else None


def rules_from(status: int, body: str, reason: str = "") -> RobotsRules:
    """RFC 9309 section 2.3.1: 2xx parse, 4xx allow all, anything else disallow all."""
    if 200 <= status < 300:
        return RobotsRules(status, Protego.parse(body), False, "robots.txt parsed")
    if 400 <= status < 500:
        return RobotsRules(status, None, True, f"robots.txt HTTP {status}: allow all")
    return RobotsRules(status, None, False, reason or f"robots.txt HTTP {status}: disallow all (fail closed)")


class FailClosedRobotsMiddleware:
    """Fetch robots.txt once per host (cached 24 h in the state store) and enforce it."""

    PRIORITY = 1000

    def __init__(self, crawler: Any) -> None:
        s = crawler.settings
        if not s.getbool("TAILOR_ROBOTS"):
            raise NotConfigured
        self.crawler = crawler
        self.ua: str = s["USER_AGENT"]
        self.obey_delay: bool = s.getbool("TAILOR_OBEY_CRAWL_DELAY", True)
        self.max_bytes: int = s.getint("TAILOR_MAX_ROBOTS_BYTES", 512 * 2**10)
        state_db = s.get("TAILOR_STATE_DB")
        self.state = Store(state_db) if state_db else None
        self._rules: dict[str, asyncio.Future[RobotsRules]] = {}
        self._delays: dict[str, float] = {}

    @classmethod
    def from_crawler(cls, crawler: Any) -> FailClosedRobotsMiddleware:
        """Scrapy factory."""
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        """Raise :class:`RobotsDenied` for a forbidden URL; apply Crawl-delay to its slot."""
        if request.meta.get("dont_obey_robotstxt") or not request.url.startswith("http"):
            return None
        rules = await self.rules(request)
        if not rules.allowed(request.url, self.ua):
            self.crawler.stats.inc_value("tailor/robots_denied")
            raise RobotsDenied(f"{rules.reason}" if rules.parser is None else ROBOTS_DISALLOWED)
        if self.obey_delay:
            self._apply_delay(request, rules)
        return None

    def _apply_delay(self, request: Request, rules: RobotsRules) -> None:
        delay = rules.crawl_delay(self.ua)
        if not delay:
            return
        downloader = self.crawler.engine.downloader
        key = downloader.get_slot_key(request)
        slot = downloader.slots.get(key)
        if slot is not None and slot.delay < delay:
            slot.delay = delay  # the slot may be recreated after idling: re-applied per request

    async def rules(self, request: Request) -> RobotsRules:
        """The rules of ``request``'s host (scheme + authority), fetched at most once."""
        parts = urlsplit(request.url)
        netloc = f"{parts.scheme}://{parts.netloc}"
        fut = self._rules.get(netloc)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._rules[netloc] = fut
            try:
                rules = await self._fetch(netloc)
            except Exception as exc:  # never leave waiters hanging: fail closed
                rules = RobotsRules(0, None, False, f"robots.txt error {exc!r}: disallow all")
            fut.set_result(rules)
        return await asyncio.shield(fut)

    async def _fetch(self, netloc: str) -> RobotsRules:
        cached = self.state.robots(netloc) if self.state else None
        if cached is not None:
            return rules_from(*cached)
        req = Request(
            f"{netloc}/robots.txt",
            priority=self.PRIORITY,
            dont_filter=True,
            meta={
                "dont_obey_robotstxt": True,
                "max_retry_times": 1,
                "tailor_kind": "robots",
                "download_maxsize": self.max_bytes,
            },
        )
        try:
            # Only downloader middlewares apply here: RedirectMiddleware follows up to
            # REDIRECT_MAX_TIMES (5, RFC 9309) hops and raises IgnoreRequest beyond.
            resp: Response = await self.crawler.engine.download_async(req)
        except Exception as exc:  # unreachable, timeouts after retries, redirect loop
            return RobotsRules(0, None, False, f"robots.txt unreachable ({type(exc).__name__}: {exc}): disallow all")
        body = resp.body.decode("utf-8", errors="replace") if resp.status < 300 else ""
        if 300 <= resp.status < 400:  # a redirect without Location or to a non-http URL
            return RobotsRules(resp.status, None, False, f"robots.txt HTTP {resp.status}: disallow all")
        if self.state is not None and resp.status < 500:
            self.state.put_robots(netloc, resp.status, body)  # 5xx is not cached: retry next crawl
        return rules_from(resp.status, body)


def retry_after_s(value: bytes | str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    v = value.decode("latin-1") if isinstance(value, bytes) else value
    v = v.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class BackoffRetryMiddleware:
    """Retry timeouts, connection errors, 429 and 5xx with exponential backoff.

    The wait is ``Retry-After`` when the server sends one, else ``base * 2**(n-1)``; a
    request gives up after ``retry_times`` retries, when one wait would exceed
    ``backoff_max_s``, or when its retries would outlast ``retry_budget_s``. The wait
    happens in ``process_request`` (an awaited sleep), so it holds no downloader slot.
    """

    def __init__(self, crawler: Any) -> None:
        s = crawler.settings
        self.crawler = crawler
        self.max_times = s.getint("TAILOR_RETRY_TIMES", 3)
        self.base = s.getfloat("TAILOR_BACKOFF_BASE_S", 0.5)
        self.max_wait = s.getfloat("TAILOR_BACKOFF_MAX_S", 30)
        self.budget = s.getfloat("TAILOR_RETRY_BUDGET_S", 120)

    @classmethod
    def from_crawler(cls, crawler: Any) -> BackoffRetryMiddleware:
        """Scrapy factory."""
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        """Sleep until a retried request's backoff has passed."""
        wait = request.meta.get("tailor_not_before", 0) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        return None

    def process_response(self, request: Request, response: Response) -> Request | Response:
        """Retry a retryable status, or pass the response on (HttpError reports it)."""
        if response.status not in RETRY_STATUS or request.meta.get("dont_retry"):
            return response
        ra = retry_after_s(response.headers.get("Retry-After"))
        retry = self._retry(request, f"HTTP {response.status}", ra)
        return retry or response

    def process_exception(self, request: Request, exception: BaseException) -> Request | None:
        """Retry network errors and timeouts; anything else propagates to the errback."""
        if isinstance(exception, IgnoreRequest) or request.meta.get("dont_retry"):
            return None
        return self._retry(request, f"{type(exception).__name__}: {exception}", None)

    def _retry(self, request: Request, reason: str, retry_after: float | None) -> Request | None:
        n = request.meta.get("retry_times", 0) + 1
        limit = request.meta.get("max_retry_times", self.max_times)
        now = time.monotonic()
        first = request.meta.get("tailor_first_try", now)
        wait = retry_after if retry_after is not None else self.base * 2 ** (n - 1)
        stats = self.crawler.stats
        if n > limit or wait > self.max_wait or (now - first) + wait > self.budget:
            stats.inc_value("tailor/retry_gave_up")
            request.meta["tailor_retry_gave_up"] = f"gave up after {n - 1} retries ({reason})"
            return None
        stats.inc_value("tailor/retry_count")
        stats.inc_value(f"tailor/retry_reason/{reason.split(':')[0]}")
        new = request.copy()
        new.meta.update(retry_times=n, tailor_first_try=first, tailor_not_before=now + wait, tailor_retry_reason=reason)
        new.dont_filter = True
        return new
