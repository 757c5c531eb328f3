"""Subprocess entry point: crawl ONE mall with Scrapy, then exit.

Twisted's reactor cannot be restarted inside one process, so every mall crawl runs in
its own interpreter (``python -m pipelines.crawl.run ...``). That also makes a crawl easy
to kill and resume: the run store and blob store on disk are the only state.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipelines.crawl.config import MallConfig, Politeness


def scrapy_settings(
    pol: Politeness, state_db: Path, log_file: Path | None, mall: MallConfig | None = None
) -> dict[str, Any]:
    """Scrapy settings for one mall's politeness block and scope (:mod:`pipelines.crawl.scope`)."""
    return {
        "TAILOR_ALLOWED_DOMAINS": list(mall.allowed_domains) if mall else [],
        "TAILOR_IMAGE_HOSTS": list(mall.image_hosts) if mall else [],
        "TAILOR_ALLOW_PRIVATE": bool(mall.allow_private_addresses) if mall else False,
        "TAILOR_MAX_ROBOTS_BYTES": pol.max_robots_bytes,
        # Per request kind the spider sets meta["download_maxsize"]; this covers the rest.
        # Scrapy applies it to the decompressed body too (gzip / deflate / br bombs).
        "DOWNLOAD_MAXSIZE": max(pol.max_page_bytes, pol.max_sitemap_bytes, pol.max_image_bytes),
        "DOWNLOAD_WARNSIZE": 0,
        # Only http(s) can be fetched at all: a page cannot make the crawler read local files
        # (file://), embedded data (data:), FTP or S3 buckets.
        "DOWNLOAD_HANDLERS": {"file": None, "data": None, "ftp": None, "s3": None},
        "USER_AGENT": pol.user_agent,
        "ROBOTSTXT_OBEY": False,  # replaced by the fail-closed middleware below
        "TAILOR_ROBOTS": True,
        "TAILOR_OBEY_CRAWL_DELAY": pol.obey_crawl_delay,
        "TAILOR_STATE_DB": str(state_db),
        "TAILOR_RETRY_TIMES": pol.retry_times,
        "TAILOR_BACKOFF_BASE_S": pol.backoff_base_s,
        "TAILOR_BACKOFF_MAX_S": pol.backoff_max_s,
        "TAILOR_RETRY_BUDGET_S": pol.retry_budget_s,
        "RETRY_ENABLED": False,  # replaced by BackoffRetryMiddleware
        "DOWNLOADER_MIDDLEWARES": {
            # scope first: an out-of-scope URL never reaches robots.txt fetching or the network
            "pipelines.crawl.scope.ScopeMiddleware": 50,
            "pipelines.crawl.middlewares.FailClosedRobotsMiddleware": 100,
            "pipelines.crawl.middlewares.BackoffRetryMiddleware": 550,
        },
        "CONCURRENT_REQUESTS": max(16, pol.concurrency_per_domain),
        # Scrapy runs this many asyncio workers per callback output; a page yields a handful
        # of items/requests, and the default (100) costs more in task churn than it saves.
        "CONCURRENT_ITEMS": 8,
        "CONCURRENT_REQUESTS_PER_DOMAIN": pol.concurrency_per_domain,
        "DOWNLOAD_DELAY": pol.delay_s,
        "RANDOMIZE_DOWNLOAD_DELAY": False,  # the configured delay is a floor we can verify
        "DOWNLOAD_TIMEOUT": pol.timeout_s,
        "REDIRECT_MAX_TIMES": 5,  # RFC 9309 asks for at least five; also for pages
        "CLOSESPIDER_TIMEOUT": pol.time_budget_s,
        "DEPTH_LIMIT": 0,  # the spider enforces max_depth itself (Scrapy would drop silently)
        "COOKIES_ENABLED": False,
        "TELNETCONSOLE_ENABLED": False,
        "HTTPCACHE_ENABLED": False,
        "LOG_LEVEL": "INFO",
        "LOG_FILE": str(log_file) if log_file else None,
        "LOG_FILE_APPEND": True,
        "LOGSTATS_INTERVAL": 60,
        "REQUEST_FINGERPRINTER_IMPLEMENTATION": "2.7",
    }


def run_mall(mall: MallConfig, run_db: Path, state_db: Path, blobs: Path, log_file: Path | None = None) -> None:
    """Crawl ``mall`` into ``run_db`` in THIS process (call it from a fresh interpreter)."""
    from scrapy.crawler import CrawlerProcess

    from pipelines.crawl.spider import MallSpider

    process = CrawlerProcess(
        scrapy_settings(mall.politeness, state_db, log_file, mall), install_root_handler=log_file is None
    )
    process.crawl(
        MallSpider, mall=mall.model_dump(mode="json"), run_db=str(run_db), state_db=str(state_db), blobs=str(blobs)
    )
    process.start()


def main(argv: list[str] | None = None) -> int:
    """CLI of the subprocess: ``--mall-json FILE --run-db F --state-db F --blobs DIR``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mall-json", type=Path, required=True)
    ap.add_argument("--run-db", type=Path, required=True)
    ap.add_argument("--state-db", type=Path, required=True)
    ap.add_argument("--blobs", type=Path, required=True)
    ap.add_argument("--log-file", type=Path, default=None)
    a = ap.parse_args(argv)
    mall = MallConfig.model_validate(json.loads(a.mall_json.read_text()))
    run_mall(mall, a.run_db, a.state_db, a.blobs, a.log_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
