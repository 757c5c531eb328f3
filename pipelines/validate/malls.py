"""The per-mall table: what each mall the crawl was asked for yielded, against its last good crawl.

One row per requested mall (``malls_requested`` of ``snapshot.json``; older snapshots: its
``malls``): ``products`` fetched this crawl (not the ones carried over from an earlier
crawl), ``last_good_products`` of that mall's last good crawl, their ratio, pages, errors,
and ``reason``: a one-line diagnosis the report and the Data Docs show next to a failing
row ("0 products; robots.txt unreachable (...); 0 pages fetched", "products 12 vs 4156 at
last good crawl (run)", ...). The ``malls`` suite checks ``products > 0`` and
``ratio_to_last_good >= malls.min_ratio_to_last_good`` (``config/validation.yaml``).

A mall's *last good crawl* is the newest earlier validation run that passed (``passed`` or
``warning``, the same runs ``snapshot.row_drop`` compares with) in which that mall's own
row passed and had products; runs written before this table existed are read from their
snapshot's ``stats.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = ["mall", "products", "last_good_products", "last_good_run", "ratio_to_last_good", "pages", "errors", "reason"]
MAX_ROBOTS_REASON = 160


def requested_malls(meta: dict[str, Any], products: pd.DataFrame | None = None) -> list[str]:
    """Every mall the crawl was asked for (plus any the snapshot holds)."""
    malls = set(meta.get("malls_requested") or []) | set(meta.get("malls") or [])
    if products is not None and "mall" in products.columns:
        malls |= set(products["mall"].dropna().astype(str))
    return sorted(malls)


def _fetched_from_products(products: pd.DataFrame, mall: str) -> int:
    """Products of ``mall`` answered this crawl, from the product rows (snapshots without
    per-mall ``fetched`` stats): live rows it lists, less those carried over unvisited."""
    if not len(products) or "mall" not in products.columns:
        return 0
    live = products
    if "removed" in live.columns:
        live = live[~live["removed"].astype(bool)]
    if "status" in live.columns:
        live = live[~live["status"].isin(["not_visited", "removed", "gone"])]
    listed = live["mall"].astype(str) == mall
    if "also_in" in live.columns:
        listed |= live["also_in"].map(lambda xs: mall in list(xs) if xs is not None else False)
    return int(listed.sum())


def mall_outcomes(snapshot: Path, meta: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """mall -> ``crawled``, ``products``, ``pages``, ``errors``, ``errors_by_kind``,
    ``robots`` (a fail-closed robots.txt reason), ``robots_disallowed``, ``limit_hit``,
    ``close_reason``, ``incomplete_reason`` (why the run marked no removals; None: complete)
    for every requested mall of a snapshot."""
    from pipelines.crawl.snapshot import mall_outcome

    snapshot = Path(snapshot)
    meta = meta or json.loads((snapshot / "snapshot.json").read_text())
    stats_file = snapshot / "stats.json"
    per_mall = (json.loads(stats_file.read_text()).get("malls") or {}) if stats_file.exists() else {}
    products = (
        pd.read_parquet(snapshot / "products.parquet") if (snapshot / "products.parquet").exists() else pd.DataFrame()
    )
    fails = (
        pd.read_parquet(snapshot / "failures.parquet") if (snapshot / "failures.parquet").exists() else pd.DataFrame()
    )
    out = {}
    for mall in requested_malls(meta, products):
        st = per_mall.get(mall)
        rows = fails[fails["mall"] == mall].to_dict("records") if len(fails) and "mall" in fails else []
        o = mall_outcome({}, rows)
        crawled = st is not None or mall in (meta.get("malls") or []) or not per_mall
        fetched = st.get("fetched") if st else None
        if fetched is None:
            fetched = _fetched_from_products(products, mall)
        out[mall] = {
            "crawled": crawled,
            "products": int(fetched),
            "pages": int(st["pages"]) if st and "pages" in st else None,
            "errors": o["errors"],
            "errors_by_kind": o["errors_by_kind"],
            "robots": o["robots"],
            "robots_disallowed": o["robots_disallowed"],
            "limit_hit": list((st or {}).get("limit_hit") or []),
            "close_reason": (st or {}).get("close_reason"),
            "incomplete_reason": (st or {}).get("incomplete_reason"),
        }
    return out


def last_good(reports: Iterable[dict[str, Any]], malls: list[str]) -> dict[str, tuple[int, str]]:
    """mall -> (products, run) of its last good crawl, from passed runs newest first."""
    found: dict[str, tuple[int, str]] = {}
    for r in reports:
        if len(found) == len(malls):
            break
        checks = r.get("mall_checks")
        if checks is None:  # a run from before the malls suite: read its snapshot
            snap = Path(str(r.get("snapshot", "")))
            if not (snap / "snapshot.json").exists():
                continue
            try:
                checks = [{"mall": m, "products": o["products"], "ok": True} for m, o in mall_outcomes(snap).items()]
            except Exception:  # noqa: BLE001 - an unreadable old snapshot is no reference
                continue
        for c in checks:
            m = c["mall"]
            if m in malls and m not in found and c.get("ok") and int(c.get("products") or 0) > 0:
                found[m] = (int(c["products"]), str(r["run"]))
    return found


def _reason(mall: str, o: dict[str, Any], prev: tuple[int, str] | None, ratio: float | None, min_ratio: float) -> str:
    n = o["products"]
    if n == 0:
        head = "0 products"
    elif prev and ratio is not None and ratio < min_ratio:
        head = f"products {n} vs {prev[0]} at last good crawl ({prev[1]})"
    else:
        head = f"ok: {n} products" + (f", {prev[0]} at last good crawl" if prev else ", no earlier good crawl")
    parts = [head]
    if not o["crawled"]:
        parts.append("not crawled: no run of this mall in the snapshot")
    if o["robots"]:
        parts.append(str(o["robots"])[:MAX_ROBOTS_REASON])
    if o["crawled"] and o["pages"] == 0:
        parts.append("0 pages fetched")
    if o["errors"]:
        kinds = ", ".join(f"{k} {v}" for k, v in o["errors_by_kind"].items())
        parts.append(f"{o['errors']} errors ({kinds})")
    if o["limit_hit"]:
        parts.append("limit hit: " + ", ".join(o["limit_hit"]))
    if o["close_reason"] and o["close_reason"] != "finished":
        parts.append(f"crawl closed: {o['close_reason']}")
    if o.get("incomplete_reason") and o["crawled"] and o["pages"] != 0:
        parts.append(f"incomplete run, no removals marked: {o['incomplete_reason']}")
    if o["robots_disallowed"]:
        parts.append(f"{o['robots_disallowed']} robots-disallowed links skipped (policy, not errors)")
    return "; ".join(parts)


def malls_table(
    outcomes: dict[str, dict[str, Any]], previous: dict[str, tuple[int, str]], min_ratio: float
) -> pd.DataFrame:
    """One row per mall: products, last good products/run, ratio, pages, errors, reason."""
    rows = []
    for mall, o in sorted(outcomes.items()):
        prev = previous.get(mall)
        ratio = round(o["products"] / prev[0], 4) if prev and prev[0] else None
        rows.append(
            {
                "mall": mall,
                "products": o["products"],
                "last_good_products": prev[0] if prev else None,
                "last_good_run": prev[1] if prev else None,
                "ratio_to_last_good": ratio,
                "pages": o["pages"],
                "errors": o["errors"],
                "reason": _reason(mall, o, prev, ratio, min_ratio),
            }
        )
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["ratio_to_last_good"] = df["ratio_to_last_good"].astype(float)
    df["products"] = df["products"].astype("int64")
    return df


def checks_of(table: pd.DataFrame, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows as report entries, ``ok`` False where a ``malls`` expectation failed."""
    failed: dict[str, list[str]] = {}
    for r in results:
        if r["suite"] == "malls":
            for row in r.get("rows") or []:
                failed.setdefault(row["key"], []).append(r["id"])
    out = []
    for rec in table.to_dict("records"):
        rec = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in rec.items()}
        rec["failed"] = failed.get(str(rec["mall"]), [])
        rec["ok"] = not rec["failed"]
        out.append(rec)
    return out
