"""Run the checkpoints on a snapshot, apply severities, write quarantine and curated catalog.

A validation run writes ``<expectations_dir>/uncommitted/runs/<run>/``::

    report.json        status, every expectation's outcome, quarantine counts, Data Docs links
    quarantine.parquet rows that failed row-level expectations: table, key, product_id, reason
    catalog.parquet    curated products = snapshot (live) products minus quarantine, with
                       ``category`` = the taxonomy category (models.taxonomy.to_category of the
                       mall's label) and ``label`` = the mall's own label
    images.parquet     curated image links of the curated products
    labels.parquet     per-product label rows (mall, label, category) of the curated products

and updates the summary page of the Data Docs site. A critical failure raises
:class:`CriticalExpectationFailed` *after* everything above is written, so the steward
always has the report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.settings import Settings, get_settings
from pipelines.validate import malls as M
from pipelines.validate import tables as T
from pipelines.validate.config import load_validation_config
from pipelines.validate.errors import CriticalExpectationFailed
from pipelines.validate.suites import KEYS, checkpoint_name, ensure_project

SAMPLE = 10  # unexpected values kept per expectation in report.json


def runs_dir(s: Settings | None = None) -> Path:
    """Where validation runs are written (git-ignored, next to the GX project)."""
    s = s or get_settings()
    return Path(s.expectations_dir) / "uncommitted" / "runs"


def site_dir(s: Settings | None = None) -> Path:
    """The GX Data Docs site (``local_site``) the summary page is added to."""
    s = s or get_settings()
    return Path(s.expectations_dir) / "gx" / "uncommitted" / "data_docs" / "local_site"


def run_name_of(meta: dict[str, Any]) -> str:
    """``<snapshot name>-<content hash[:8]>``: one run directory per distinct snapshot."""
    return f"{meta['name']}-{str(meta.get('content_sha256', 'nohash'))[:8]}"


def list_runs(s: Settings | None = None) -> list[dict[str, Any]]:
    """Every validation report, oldest first."""
    reports = []
    for f in sorted(runs_dir(s).glob("*/report.json")):
        try:
            reports.append(json.loads(f.read_text()))
        except json.JSONDecodeError:  # a run being written; skip it
            continue
    return sorted(reports, key=lambda r: r.get("validated_at", ""))


def good_runs(meta: dict[str, Any], s: Settings | None = None) -> list[dict[str, Any]]:
    """Reports of the runs that passed validation (``passed`` / ``warning``), newest first,
    other than this snapshot's: what ``snapshot.row_drop`` and the ``malls`` suite compare with."""
    name = run_name_of(meta)
    return [r for r in reversed(list_runs(s)) if r["run"] != name and r["status"] in ("passed", "warning")]


def previous_rows_for(meta: dict[str, Any], s: Settings | None = None) -> tuple[int | None, str | None]:
    """Product count of the last snapshot that passed validation (other than this one)."""
    malls = sorted(meta.get("malls") or [])
    for r in good_runs(meta, s):
        # Compare like with like: a snapshot of the same malls.
        if r.get("malls") == malls:
            return int(r["rows"]), r["run"]
    return None, None


def _summarise(er: Any, suite: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One expectation result as plain JSON: id, severity, success, observed, samples."""
    conf = er.expectation_config
    meta = dict(conf.meta or {})
    res = dict(er.result or {})
    exc = er.exception_info or {}
    raised = bool(exc.get("raised_exception")) if isinstance(exc, dict) else False
    if raised:
        observed = f"error: {str(exc.get('exception_message'))[:200]}"
    elif "unexpected_count" in res:
        observed = (
            f"{res['unexpected_count']} unexpected ({res.get('unexpected_percent') or 0:.2f}%)"
            f"; sample {list(res.get('partial_unexpected_list') or [])[:5]}"
        )
    else:
        observed = f"observed {res.get('observed_value')}"
    key = KEYS[suite]
    rows = []
    for item in res.get("unexpected_index_list") or []:
        if isinstance(item, dict) and key in item:
            # A table that names a ``reason`` per row (malls) reports it rather than the value.
            rows.append(
                {"key": str(item[key]), "value": str(item.get("reason", item.get(conf.kwargs.get("column"), "")))}
            )
    sample = [_jsonable(v) for v in list(res.get("partial_unexpected_list") or [])[:SAMPLE]]
    if rows and not meta.get("quarantine"):
        # Report-only row checks (e.g. rare classes): the key says more than the value.
        sample = [f"{r['key']}: {r['value']}" for r in rows[:SAMPLE]]
        observed = f"{res.get('unexpected_count')} unexpected; {sample[:5]}"
    return {
        "id": f"{suite}.{meta.get('name', conf.type)}",
        "suite": suite,
        "name": meta.get("name"),
        "type": conf.type,
        "column": conf.kwargs.get("column"),
        "severity": meta.get("severity", "critical"),
        "quarantine": meta.get("quarantine"),
        "success": bool(er.success) and not raised,
        "observed": observed,
        "observed_value": _jsonable(res.get("observed_value")),
        "unexpected_count": res.get("unexpected_count"),
        "unexpected_percent": res.get("unexpected_percent"),
        "sample": sample,
        "rows": rows,
    }


def _jsonable(v: Any) -> Any:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def _quarantine(results: list[dict[str, Any]], tabs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Quarantine rows from the failing rows of row-level expectations, mapped to products."""
    img_product = (
        dict(zip(tabs["images"]["image_key"], tabs["images"]["product_id"], strict=True)) if len(tabs["images"]) else {}
    )
    ann_image = (
        dict(zip(tabs["annotations"]["annotation_id"].astype(str), tabs["annotations"]["image_sha256"], strict=True))
        if "annotations" in tabs and len(tabs["annotations"])
        else {}
    )
    rows = []
    for r in results:
        if not r["quarantine"]:
            continue
        for row in r["rows"]:
            pid = {"products": row["key"], "labels": row["key"], "images": img_product.get(row["key"])}.get(r["suite"])
            rows.append(
                {
                    "table": r["suite"],
                    "key": row["key"],
                    "product_id": pid,
                    "image_sha256": ann_image.get(row["key"]) if r["suite"] == "annotations" else None,
                    "reason": r["quarantine"],
                    "expectation": r["id"],
                    "value": row["value"],
                    "severity": r["severity"],
                }
            )
    return pd.DataFrame(
        rows, columns=["table", "key", "product_id", "image_sha256", "reason", "expectation", "value", "severity"]
    )


def validate_snapshot(
    snapshot: Path,
    *,
    annotations: Path | None = None,
    previous_rows: int | None = None,
    s: Settings | None = None,
    cfg: dict[str, Any] | None = None,
    raise_on_critical: bool = True,
    now: pd.Timestamp | None = None,
    previous_malls: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Validate a crawl snapshot (and optionally an annotation import); return the report.

    Runs one checkpoint per suite, builds Data Docs, writes quarantine and the curated
    catalog into the run directory and refreshes the summary page. ``previous_rows`` is the
    product count to compare with; by default the last snapshot that passed.
    ``previous_malls`` (mall -> products) replaces each mall's last good crawl. Raises
    :class:`CriticalExpectationFailed` naming the failed critical expectations and the
    report when ``raise_on_critical``.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    t0 = time.time()
    s = s or get_settings()
    cfg = cfg or load_validation_config()
    snapshot = Path(snapshot).resolve()
    meta = T.snapshot_meta(snapshot)
    run = run_name_of(meta)
    products, images = T.read_snapshot(snapshot)
    prev_run = None
    if previous_rows is None:
        previous_rows, prev_run = previous_rows_for(meta, s)
    labels, classes = T.labels_tables(products, cfg)
    tabs: dict[str, pd.DataFrame] = {
        "products": T.products_table(products, cfg),
        "images": T.images_table(images),
        "labels": labels,
        "label_classes": classes,
        "snapshot": T.snapshot_table(run, products, previous_rows, now),
        "malls": _malls_table(snapshot, meta, previous_malls, cfg, s),
    }
    if annotations is not None:
        tabs["annotations"] = T.annotations_table(Path(annotations))
    ctx = ensure_project(Path(s.expectations_dir), cfg)
    run_id = RunIdentifier(run_name=run)
    results: list[dict[str, Any]] = []
    docs: dict[str, str] = {}
    for suite, df in tabs.items():
        cp = ctx.checkpoints.get(checkpoint_name(suite))
        res = cp.run(batch_parameters={"dataframe": df}, run_id=run_id)
        for vri, vr in res.run_results.items():
            results += [_summarise(er, suite, cfg) for er in vr.results]
            urls = ctx.get_docs_sites_urls(resource_identifier=vri)
            if urls and urls[0].get("site_url"):
                docs[suite] = urls[0]["site_url"]
    # Quarantine and the curated catalog (snapshot minus quarantine).
    q = _quarantine(results, tabs)
    bad_products = set(q["product_id"].dropna())
    bad_images = set(q.loc[q["table"] == "images", "key"])
    imgs = tabs["images"]
    good_imgs = imgs[~imgs["image_key"].isin(bad_images) & ~imgs["product_id"].isin(bad_products)]
    with_image = set(good_imgs["product_id"])
    no_image = [pid for pid in tabs["products"]["product_id"] if pid not in bad_products and pid not in with_image]
    if no_image:
        q = pd.concat(
            [
                q,
                pd.DataFrame(
                    {
                        "table": "products",
                        "key": no_image,
                        "product_id": no_image,
                        "image_sha256": None,
                        "reason": "no valid image",
                        "expectation": "images.*",
                        "value": "",
                        "severity": "warning",
                    }
                ),
            ],
            ignore_index=True,
        )
        bad_products |= set(no_image)
    catalog = (
        products[~products["product_id"].isin(bad_products)].reset_index(drop=True)
        if "product_id" in products.columns
        else products.iloc[0:0]
    )
    catalog = T.curate_categories(catalog)  # taxonomy `category`, the mall's own `label`
    good_imgs = (
        good_imgs[good_imgs["product_id"].isin(set(catalog["product_id"]))] if len(catalog) else good_imgs.iloc[0:0]
    )
    out = runs_dir(s) / run
    out.mkdir(parents=True, exist_ok=True)
    q.to_parquet(out / "quarantine.parquet", index=False)
    catalog.to_parquet(out / "catalog.parquet", index=False)
    good_imgs.to_parquet(out / "images.parquet", index=False)
    labels[labels["product_id"].isin(set(catalog.get("product_id", [])))].to_parquet(
        out / "labels.parquet", index=False
    )
    critical = [r for r in results if not r["success"] and r["severity"] == "critical"]
    warnings = [r for r in results if not r["success"] and r["severity"] != "critical"]
    status = "failed" if critical else ("warning" if warnings else "passed")
    first_failing = next((docs.get(r["suite"]) for r in critical + warnings if docs.get(r["suite"])), None)
    report = {
        "run": run,
        "snapshot": str(snapshot),
        "snapshot_name": meta["name"],
        "malls": sorted(meta.get("malls") or []),
        "malls_requested": sorted(tabs["malls"]["mall"]),
        "mall_checks": M.checks_of(tabs["malls"], results),
        "content_sha256": meta.get("content_sha256"),
        "annotations": str(annotations) if annotations else None,
        "validated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": status,
        "rows": len(products),
        "images": len(imgs),
        "previous_rows": previous_rows,
        "previous_run": prev_run,
        "curated_rows": len(catalog),
        "curated_images": len(good_imgs),
        "critical_failed": [r["id"] for r in critical],
        "warnings_failed": [r["id"] for r in warnings],
        "quarantine_total": len(q),
        "quarantined_products": int(q["product_id"].nunique()),
        "quarantine_by_reason": {k: int(v) for k, v in q["reason"].value_counts().items()},
        "class_counts": {r["class_key"]: int(r["n"]) for _, r in classes.iterrows()},
        "results": [{k: v for k, v in r.items() if k != "rows"} for r in results],
        "data_docs": docs,
        "data_docs_index": str(site_dir(s) / "index.html"),
        "report_url": first_failing or str(site_dir(s) / "index.html"),
        "run_dir": str(out),
        "duration_s": round(time.time() - t0, 3),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    from pipelines.validate.report import build_summary

    summary = build_summary(s)
    report["summary"] = str(summary)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    if critical and raise_on_critical:
        raise CriticalExpectationFailed(run, critical, report["report_url"])
    return report


def _malls_table(
    snapshot: Path, meta: dict[str, Any], previous: dict[str, int] | None, cfg: dict[str, Any], s: Settings
) -> pd.DataFrame:
    """Per requested mall: products this crawl vs its last good crawl, with the reason."""
    outcomes = M.mall_outcomes(snapshot, meta)
    if previous is None:
        last = M.last_good(good_runs(meta, s), sorted(outcomes))
    else:
        last = {m: (int(n), "given") for m, n in previous.items() if n}
    ratio = float((cfg.get("malls") or {}).get("min_ratio_to_last_good", 0.5))
    return M.malls_table(outcomes, last, ratio)


def load_report(run_dir: Path) -> dict[str, Any]:
    """``report.json`` of a validation run directory."""
    return json.loads((Path(run_dir) / "report.json").read_text())


def ensure_passed(run_dir: Path) -> dict[str, Any]:
    """Re-raise :class:`CriticalExpectationFailed` for a failed run (used by later DAG tasks)."""
    rep = load_report(run_dir)
    if rep["status"] == "failed":
        failed = [r for r in rep["results"] if r["id"] in rep["critical_failed"]]
        raise CriticalExpectationFailed(rep["run"], failed, rep["report_url"])
    return rep
