"""The data steward's summary page, added to the GX Data Docs site.

``<site>/tailor/index.html`` lists every validated snapshot (newest first) with its status,
failed expectations (linked to the GX validation pages), quarantine counts by reason, a
sample of quarantined rows, and the class histograms before/after balancing as pictures.
GX's own ``index.html`` stays the entry point for suites and every validation result.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{margin:0 0 4px} .sub{color:#666;margin-bottom:18px}
table{border-collapse:collapse;background:#fff} td,th{border:1px solid #ddd;padding:4px 8px;font-size:13px;vertical-align:top}
th{background:#eef1f5;text-align:left} .run{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin:16px 0}
.status{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.passed{background:#2e7d32} .warning{background:#ed8f03} .failed{background:#c62828}
.hist img{max-width:560px;border:1px solid #ddd;margin:4px;background:#fff} code{font-size:12px}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _run_section(r: dict[str, Any], site: Path) -> str:
    docs = r.get("data_docs") or {}

    def link(suite: str, text: str) -> str:
        url = docs.get(suite)
        if not url:
            return _esc(text)
        rel = Path(url.removeprefix("file://")).relative_to(site).as_posix() if url.startswith("file://") else url
        return f'<a href="../{_esc(rel)}">{_esc(text)}</a>'

    failed = [x for x in r["results"] if not x["success"]]
    rows = (
        "".join(
            f"<tr><td>{link(x['suite'], x['id'])}</td><td>{_esc(x['severity'])}</td>"
            f"<td><code>{_esc(x['type'])}</code>{'(' + _esc(x['column']) + ')' if x.get('column') else ''}</td>"
            f"<td>{_esc(x['observed'])}</td></tr>"
            for x in failed
        )
        or '<tr><td colspan="4">every expectation passed</td></tr>'
    )
    q = r.get("quarantine_by_reason") or {}
    qrows = (
        "".join(f"<tr><td>{_esc(k)}</td><td>{v}</td></tr>" for k, v in q.items())
        or '<tr><td colspan="2">nothing quarantined</td></tr>'
    )
    samples = ""
    qfile = Path(r["run_dir"]) / "quarantine.parquet"
    if q and qfile.exists():
        import pandas as pd

        qdf = pd.read_parquet(qfile)
        top = qdf.groupby("reason", sort=False).head(8)
        samples = (
            "<details><summary>quarantined rows (sample)</summary><table><tr><th>table</th>"
            "<th>key</th><th>reason</th><th>value</th></tr>"
            + "".join(
                f"<tr><td>{_esc(t.table)}</td><td>{_esc(t.key)}</td><td>{_esc(t.reason)}</td>"
                f"<td>{_esc(t.value)}</td></tr>"
                for t in top.itertuples()
            )
            + "</table></details>"
        )
    hists = "".join(f'<img src="{_esc(h)}" alt="{_esc(Path(h).stem)} histogram">' for h in r.get("histograms") or [])
    classes = r.get("class_counts") or {}
    class_line = ", ".join(
        f"{_esc(k.split('/', 1)[-1])} {v}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1])
    )
    drop = f" (previous {r['previous_rows']})" if r.get("previous_rows") else ""
    malls = "".join(
        f'<tr><td>{_esc(m["mall"])}</td><td><span class="status {"passed" if m.get("ok") else "failed"}">'
        f"{'ok' if m.get('ok') else 'FAILED'}</span></td><td>{_esc(m.get('products'))}</td>"
        f"<td>{_esc(m.get('last_good_products') if m.get('last_good_products') is not None else '-')}</td>"
        f"<td>{_esc(m.get('reason'))}</td></tr>"
        for m in r.get("mall_checks") or []
    )
    malls_html = (
        (
            "<h3>Malls</h3><table><tr><th>mall</th><th>outcome</th><th>products</th>"
            f"<th>last good crawl</th><th>reason</th></tr>{malls}</table>"
        )
        if malls
        else ""
    )
    return f"""<div class="run" id="{_esc(r["run"])}">
<h2><span class="status {_esc(r["status"])}">{_esc(r["status"].upper())}</span> {_esc(r["run"])}</h2>
<p>validated {_esc(r["validated_at"])} in {r.get("duration_s", "?")} s &middot; malls {_esc(", ".join(r.get("malls") or []))}
&middot; {r["rows"]} products{drop} &rarr; {r["curated_rows"]} curated &middot; {r["images"]} images &rarr;
{r["curated_images"]} curated &middot; <a href="../index.html">all GX results</a></p>
{malls_html}
<h3>Failed expectations</h3><table><tr><th>expectation</th><th>severity</th><th>check</th><th>observed / sample unexpected</th></tr>{rows}</table>
<h3>Quarantine by reason ({r.get("quarantine_total", 0)} rows)</h3><table><tr><th>reason</th><th>rows</th></tr>{qrows}</table>
{samples}
<h3>Classes</h3><p>{class_line}</p>
<div class="hist">{hists or "<p>histograms appear once the training set is built</p>"}</div>
</div>"""


def build_summary(s: Settings | None = None) -> Path:
    """(Re)write ``<site>/tailor/index.html`` from every run's ``report.json``; return its path."""
    from pipelines.validate.checkpoint import list_runs, site_dir

    s = s or get_settings()
    site = site_dir(s)
    out = site / "tailor" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = list(reversed(list_runs(s)))
    overview = "".join(
        f'<tr><td><a href="#{_esc(r["run"])}">{_esc(r["run"])}</a></td><td><span class="status '
        f'{_esc(r["status"])}">{_esc(r["status"])}</span></td><td>{_esc(r["validated_at"])}</td>'
        f"<td>{r['rows']}</td><td>{r['curated_rows']}</td><td>{r.get('quarantine_total', 0)}</td>"
        f"<td>{_esc('; '.join(f'{k}: {v}' for k, v in (r.get('quarantine_by_reason') or {}).items()))}</td>"
        f"<td>{_esc(', '.join(r.get('critical_failed') or []) or '-')}</td>"
        f"<td>{_esc(', '.join(r.get('warnings_failed') or []) or '-')}</td></tr>"
        for r in runs
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Tailor data quality</title>
<style>{_CSS}</style></head><body>
<h1>Tailor data quality</h1><div class="sub">{len(runs)} snapshot(s) validated &middot;
Great Expectations Data Docs: <a href="../index.html">suites and validation results</a></div>
<table><tr><th>snapshot run</th><th>status</th><th>validated</th><th>products</th><th>curated</th>
<th>quarantined</th><th>quarantine by reason</th><th>critical failures</th><th>warnings failed</th></tr>{overview}</table>
{"".join(_run_section(r, site) for r in runs)}
</body></html>"""
    out.write_text(page)
    (out.parent / "runs.json").write_text(
        json.dumps(
            [
                {k: r.get(k) for k in ("run", "status", "validated_at", "rows", "curated_rows", "quarantine_by_reason")}
                for r in runs
            ],
            indent=1,
        )
    )
    return out
