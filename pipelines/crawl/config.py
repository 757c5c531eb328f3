"""Typed crawl configuration: the malls YAML file an ML engineer writes.

``load_config(path)`` reads and validates it; every problem is reported at once with the
mall and field it concerns (:class:`ConfigError`), so a typo never starts a crawl.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.settings import PROJECT_ROOT, get_settings

Extractor = Literal["jsonld", "microdata", "opengraph", "css"]
#: Selectors the ``css`` extractor cannot work without.
REQUIRED_CSS_SELECTORS = ("title", "images")
#: A user agent must say how to reach its operator (a URL or an e-mail address).
_CONTACT = re.compile(r"(https?://\S+|[\w.+-]+@[\w-]+\.[\w.]+)")


class ConfigError(ValueError):
    """The malls file is missing, not YAML, or does not validate."""


class Politeness(BaseModel):
    """How gently one mall is crawled."""

    model_config = ConfigDict(extra="forbid")

    concurrency_per_domain: int = Field(1, ge=1, le=64, description="parallel requests per host")
    delay_s: float = Field(1.0, ge=0, description="pause between requests to one host")
    max_pages: int = Field(5000, ge=1, description="HTML pages fetched at most (images not counted)")
    max_depth: int = Field(10, ge=0, description="link hops from a start URL or sitemap")
    time_budget_s: float = Field(3600, gt=0, description="wall-clock limit of the mall's crawl")
    user_agent: str = Field(..., min_length=3, description="must carry a contact URL or e-mail")
    obey_crawl_delay: bool = Field(True, description="raise delay to robots.txt Crawl-delay")
    timeout_s: float = Field(30, gt=0, description="per-request download timeout")
    retry_times: int = Field(3, ge=0, le=10, description="retries of a timeout/429/5xx")
    backoff_base_s: float = Field(0.5, ge=0, description="first retry delay; doubles per retry")
    backoff_max_s: float = Field(30, ge=0, description="longest single wait (Retry-After included)")
    retry_budget_s: float = Field(120, ge=0, description="total time one URL may spend retrying")
    max_image_bytes: int = Field(20 * 2**20, ge=1024, description="larger images are rejected")
    # Scrapy's own default is 1 GiB for any response, decompressed gzip included: a hostile
    # page could fill memory. Caps apply to the decompressed body; a larger one is a failure.
    max_page_bytes: int = Field(5 * 2**20, ge=1024, description="larger HTML pages are rejected")
    max_sitemap_bytes: int = Field(10 * 2**20, ge=1024, description="larger sitemaps are rejected")
    max_robots_bytes: int = Field(
        512 * 2**10, ge=1024, description="a larger robots.txt counts as unreachable: disallow all"
    )
    # A mall answering mostly 5xx/timeouts is having an outage: its run proves nothing about
    # which products are gone, so it is incomplete and marks no removals.
    max_error_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of failed page requests (5xx, timeout, network) above which the run is incomplete",
    )

    @field_validator("user_agent")
    @classmethod
    def _has_contact(cls, v: str) -> str:
        if not _CONTACT.search(v):
            raise ValueError(
                "user_agent must include a contact URL or e-mail, e.g. 'TailorBot/1.0 (+https://example.org/bot)'"
            )
        return v

    @classmethod
    def off(cls, user_agent: str = "TailorBot/1.0 (+https://example.org/bot)", **kw: Any) -> Politeness:
        """No delays, high concurrency, Crawl-delay ignored: loopback tests and benchmarks only."""
        values: dict[str, Any] = dict(
            concurrency_per_domain=16, delay_s=0.0, obey_crawl_delay=False, user_agent=user_agent, backoff_base_s=0.05
        )
        values.update(kw)
        return cls(**values)


class MallConfig(BaseModel):
    """One mall: where to start, what is in scope, how to read a product page."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    start_urls: list[str] = Field(default_factory=list)
    sitemap: str | None = None
    allowed_domains: list[str] = Field(default_factory=list)
    extractor: Extractor
    selectors: dict[str, str] = Field(default_factory=dict)
    politeness: Politeness
    #: extra hosts images may come from (a CDN); pages stay on allowed_domains
    image_hosts: list[str] = Field(default_factory=list)
    #: loopback / private / link-local addresses are refused unless this is set (demo malls)
    allow_private_addresses: bool = False

    @field_validator("start_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for u in v:
            _check_url(u)
        return v

    @field_validator("sitemap")
    @classmethod
    def _sitemap(cls, v: str | None) -> str | None:
        return _check_url(v) if v else None

    @model_validator(mode="after")
    def _consistent(self) -> MallConfig:
        if not self.start_urls and not self.sitemap:
            raise ValueError("give start_urls and/or a sitemap")
        if not self.allowed_domains:
            # Default scope: the hosts of the start URLs and sitemap.
            hosts = {urlsplit(u).hostname for u in [*self.start_urls, self.sitemap] if u}
            self.allowed_domains = sorted(h for h in hosts if h)
        if self.extractor == "css":
            missing = [k for k in REQUIRED_CSS_SELECTORS if not self.selectors.get(k)]
            if missing:
                raise ValueError(f"extractor 'css' needs selectors {missing}")
        return self

    def in_scope(self, url: str) -> bool:
        """Whether ``url``'s host is one of ``allowed_domains`` (or a subdomain of one)."""
        from pipelines.crawl.scope import host_matches

        return host_matches(urlsplit(url).hostname or "", self.allowed_domains)


class CrawlConfig(BaseModel):
    """The whole malls file."""

    model_config = ConfigDict(extra="forbid")

    malls: list[MallConfig] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CrawlConfig:
        names = [m.name for m in self.malls]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"mall names must be unique; repeated: {dup}")
        return self

    def select(self, names: list[str] | None) -> CrawlConfig:
        """Only the named malls (all when ``names`` is empty); unknown names are an error."""
        if not names:
            return self
        known = {m.name for m in self.malls}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown mall(s) {unknown}; the file has {sorted(known)}")
        return CrawlConfig(malls=[m for m in self.malls if m.name in names])

    def with_limits(
        self,
        max_pages: int | None = None,
        max_depth: int | None = None,
        time_budget_s: float | None = None,
        polite: bool = True,
    ) -> CrawlConfig:
        """A copy with limits overridden; ``polite=False`` switches politeness off (tests, bench)."""
        malls = []
        for m in self.malls:
            p = (
                m.politeness
                if polite
                else Politeness.off(
                    m.politeness.user_agent,
                    max_pages=m.politeness.max_pages,
                    max_depth=m.politeness.max_depth,
                    time_budget_s=m.politeness.time_budget_s,
                )
            )
            upd = {
                k: v
                for k, v in (("max_pages", max_pages), ("max_depth", max_depth), ("time_budget_s", time_budget_s))
                if v is not None
            }
            malls.append(m.model_copy(update={"politeness": p.model_copy(update=upd)}))
        return CrawlConfig(malls=malls)


def _check_url(u: str) -> str:
    parts = urlsplit(u)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{u!r} is not an absolute http(s) URL")
    return u


def _format_errors(exc: ValidationError, data: dict[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = ".".join(str(x) for x in loc)
        if len(loc) >= 2 and loc[0] == "malls" and isinstance(loc[1], int):
            try:
                where = f"mall {data['malls'][loc[1]].get('name', loc[1])!r}: " + ".".join(map(str, loc[2:]))
            except (KeyError, IndexError, TypeError, AttributeError):
                pass
        lines.append(f"  - {where or '(top level)'}: {err['msg']}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> CrawlConfig:
    """Validate an already-loaded mapping; raise :class:`ConfigError` listing every problem."""
    if not isinstance(data, dict) or "malls" not in data:
        raise ConfigError(f"{source}: expected a mapping with a 'malls:' list at the top")
    try:
        return CrawlConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid crawl config:\n{_format_errors(exc, data)}") from None


#: The project's own malls file. Its demo malls' URLs are written for the default demo-mall
#: ports (:data:`SHIPPED_BASE_PORT` on); ``tailor mall serve`` moves the malls to
#: ``TAILOR_MALL_BASE_PORT``, and loading this file moves their URLs along with them.
SHIPPED_MALLS = PROJECT_ROOT / "config" / "malls.yaml"
SHIPPED_BASE_PORT = 8001


def _on_mall_ports(cfg: CrawlConfig, base_port: int) -> CrawlConfig:
    """``cfg`` with every loopback URL on a shipped demo-mall port moved to ``base_port`` on."""
    shift = base_port - SHIPPED_BASE_PORT
    n = len(cfg.malls)

    def moved(url: str | None) -> str | None:
        parts = urlsplit(url) if url else None
        if not parts or parts.hostname != "127.0.0.1" or not parts.port:
            return url
        if not SHIPPED_BASE_PORT <= parts.port < SHIPPED_BASE_PORT + n:
            return url
        return parts._replace(netloc=f"{parts.hostname}:{parts.port + shift}").geturl()

    malls = [
        m.model_copy(update={"start_urls": [moved(u) for u in m.start_urls], "sitemap": moved(m.sitemap)})
        for m in cfg.malls
    ]
    return cfg.model_copy(update={"malls": malls})


def load_config(path: Path | str) -> CrawlConfig:
    """Read and validate a malls YAML file (the shipped one on the demo malls' ports in force,
    ``Settings.mall_base_port``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read malls file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    cfg = parse_config(data, str(path))
    base = get_settings().mall_base_port
    if base != SHIPPED_BASE_PORT and path.resolve() == SHIPPED_MALLS.resolve():
        cfg = _on_mall_ports(cfg, base)
    return cfg


def demo_config(urls: dict[str, str], politeness: Politeness | None = None) -> CrawlConfig:
    """A config for demo malls served at ``urls`` (name -> base URL, e.g. from MallServer.urls()).

    Extractor and selectors per mall name come from the project's ``config/malls.yaml``
    (photos / unknown names: JSON-LD), so tests and the benchmark crawl exactly what the
    shipped config describes, only at other ports.
    """
    shipped = {m.name: m for m in load_config(SHIPPED_MALLS).malls}
    malls = []
    for name, base in urls.items():
        base = base.rstrip("/")
        ref = shipped.get(name)
        pol = politeness or (ref.politeness if ref else Politeness.off())
        malls.append(
            MallConfig(
                name=name,
                start_urls=[base + "/"],
                sitemap=base + "/sitemap.xml",
                allowed_domains=[urlsplit(base).hostname or "127.0.0.1"],
                extractor=ref.extractor if ref else "jsonld",
                selectors=dict(ref.selectors) if ref else {},
                politeness=pol,
                allow_private_addresses=True,
            )
        )  # served on loopback
    return CrawlConfig(malls=malls)
