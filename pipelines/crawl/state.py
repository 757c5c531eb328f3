"""SQLite stores: one *run store* per mall per crawl run, one *state store* per mall.

The run store is the crawl's item store. Every write is keyed (product id, image URL,
failure URL+kind), so a crawl killed with SIGKILL and started again over the same run
store ends with the same rows and no duplicates; WAL mode plus a commit per item keep a
kill from losing more than the item in flight.

The state store (``<state_dir>/<mall>.sqlite``) is what the next crawl of the mall knows:
the last products seen, image validators, and robots.txt answers (cached for 24 h). It
is updated once, when a mall's run finishes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS products (
    product_id TEXT PRIMARY KEY, mall TEXT, url TEXT, page_url TEXT, sku TEXT, title TEXT,
    brand TEXT, price REAL, currency TEXT, category TEXT, description TEXT,
    attributes TEXT, image_urls TEXT, fetched_at REAL, etag TEXT, last_modified TEXT,
    status TEXT, removed INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS images (
    url TEXT PRIMARY KEY, sha256 TEXT, width INTEGER, height INTEGER, format TEXT,
    phash TEXT, bytes INTEGER, ext TEXT, fetched_at REAL, etag TEXT, last_modified TEXT,
    status TEXT);
CREATE TABLE IF NOT EXISTS failures (
    url TEXT, kind TEXT, mall TEXT, reason TEXT, status INTEGER, time REAL, product_id TEXT,
    PRIMARY KEY (url, kind));
CREATE TABLE IF NOT EXISTS pages (url TEXT PRIMARY KEY, status INTEGER, bytes INTEGER,
    time REAL, product_id TEXT);
CREATE TABLE IF NOT EXISTS robots (netloc TEXT PRIMARY KEY, status INTEGER, body TEXT,
    fetched_at REAL);
"""

PRODUCT_COLS = (
    "product_id",
    "mall",
    "url",
    "page_url",
    "sku",
    "title",
    "brand",
    "price",
    "currency",
    "category",
    "description",
    "attributes",
    "image_urls",
    "fetched_at",
    "etag",
    "last_modified",
    "status",
    "removed",
)
IMAGE_COLS = (
    "url",
    "sha256",
    "width",
    "height",
    "format",
    "phash",
    "bytes",
    "ext",
    "fetched_at",
    "etag",
    "last_modified",
    "status",
)
FAILURE_COLS = ("url", "kind", "mall", "reason", "status", "time", "product_id")

#: robots.txt answers are reused for at most this long (RFC 9309 section 2.4).
ROBOTS_TTL_S = 24 * 3600


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating) a store with the schema; WAL so a reader never blocks the crawler."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.executescript(SCHEMA)
    return con


class Store:
    """Typed access to one store (run store or state store)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.con = connect(self.path)

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str, default: Any = None) -> Any:
        """A JSON value from the meta table."""
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        """Set a JSON value in the meta table."""
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # ------------------------------------------------------------------ rows
    def _upsert(self, table: str, cols: tuple[str, ...], row: dict[str, Any]) -> None:
        vals = [row.get(c) for c in cols]
        self.con.execute(
            f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", vals
        )

    def put_product(self, row: dict[str, Any]) -> None:
        """Insert or replace one product (keyed by product_id)."""
        row = dict(row)
        for k in ("attributes", "image_urls"):
            if not isinstance(row.get(k), str | type(None)):
                row[k] = json.dumps(row[k], sort_keys=True, ensure_ascii=False)
        self._upsert("products", PRODUCT_COLS, row)

    def put_image(self, row: dict[str, Any]) -> None:
        """Insert or replace one image (keyed by source URL)."""
        self._upsert("images", IMAGE_COLS, row)

    def put_failure(self, row: dict[str, Any]) -> None:
        """Record one failure (keyed by URL and kind: a retried URL is one row)."""
        row = {"time": time.time(), **row}
        self._upsert("failures", FAILURE_COLS, row)

    def clear_failure(self, url: str) -> None:
        """Forget failures of ``url`` (it succeeded after a restart)."""
        self.con.execute("DELETE FROM failures WHERE url=?", (url,))

    def put_page(self, url: str, status: int, size: int, product_id: str | None) -> None:
        """Record one fetched HTML page."""
        self.con.execute(
            "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?)", (url, status, size, time.time(), product_id)
        )

    def products(self, mall: str | None = None) -> dict[str, dict[str, Any]]:
        """product_id -> row (attributes / image_urls decoded)."""
        q, args = "SELECT * FROM products", ()
        if mall:
            q, args = q + " WHERE mall=?", (mall,)
        out = {}
        for r in self.con.execute(q, args):
            d = dict(r)
            d["attributes"] = json.loads(d["attributes"] or "{}")
            d["image_urls"] = json.loads(d["image_urls"] or "[]")
            out[d["product_id"]] = d
        return out

    def product_by_url(self) -> dict[str, dict[str, Any]]:
        """Product rows indexed by page URL and canonical URL."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.products().values():
            for u in (p["page_url"], p["url"]):
                if u:
                    out[u] = p
        return out

    def images(self) -> dict[str, dict[str, Any]]:
        """image URL -> row."""
        return {r["url"]: dict(r) for r in self.con.execute("SELECT * FROM images")}

    def failures(self) -> list[dict[str, Any]]:
        """Every failure row."""
        return [dict(r) for r in self.con.execute("SELECT * FROM failures ORDER BY url, kind")]

    def page_urls(self) -> set[str]:
        """URLs of pages already fetched in this run."""
        return {r[0] for r in self.con.execute("SELECT url FROM pages")}

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        return int(self.con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # ------------------------------------------------------------------ robots cache
    def robots(self, netloc: str, now: float | None = None) -> tuple[int, str] | None:
        """A cached robots.txt answer younger than 24 h, or None."""
        row = self.con.execute("SELECT status, body, fetched_at FROM robots WHERE netloc=?", (netloc,)).fetchone()
        now = time.time() if now is None else now
        if row and now - row["fetched_at"] < ROBOTS_TTL_S:
            return int(row["status"]), row["body"]
        return None

    def put_robots(self, netloc: str, status: int, body: str) -> None:
        """Cache one robots.txt answer."""
        self.con.execute("INSERT OR REPLACE INTO robots VALUES (?, ?, ?, ?)", (netloc, status, body, time.time()))

    # ------------------------------------------------------------------ bulk
    def put_many(self, kind: str, rows: Iterable[dict[str, Any]]) -> None:
        """Upsert many products or images in one transaction."""
        put = {"products": self.put_product, "images": self.put_image}[kind]
        self.con.execute("BEGIN")
        try:
            for r in rows:
                put(r)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
