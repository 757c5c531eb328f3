"""The promotion gate's rules: thresholds from ``config/gate.yaml``, the trivial-baseline
margin, and the no-regression tolerance against the current champion.

:func:`decide` is a pure function of the metrics; :func:`pipelines.registry.gate` applies
it to a registered version and moves the ``@champion`` alias. A candidate is promoted only
if (a) every threshold holds, (b) every gated metric ``m`` beats ``baseline_m`` (what a
model that learned nothing scores on the same evaluation rows) by the configured margin
(a missing baseline fails: nothing shows the model beat chance), and (c) it does not
regress the champion by more than the tolerance on the same evaluation set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.settings import PROJECT_ROOT

GATE_CONFIG = PROJECT_ROOT / "config" / "gate.yaml"
#: default absolute margin a gated metric must beat its trivial baseline by (config/gate.yaml)
BASELINE_MARGIN = 0.10
#: what ``baseline_<metric>`` is, per model (metric-specific entries first), for the reasons
BASELINE_KIND = {
    "top_category_acc_real": "majority-class",
    "tagger": "majority-class",
    "embedder": "random-ranking",
    "detector": "empty-detector",
    "parser": "all-background",
}


@dataclass
class GateConfig:
    """Thresholds per model and metric (``metric: minimum``), the no-regression tolerance and
    the margin over the trivial baseline (``baseline_margin``, per-metric overrides in
    ``baseline_margins[model][metric]``)."""

    thresholds: dict[str, dict[str, float]]
    tolerance: float = 0.02
    profile: str = "demo"
    baseline_margin: float = BASELINE_MARGIN
    baseline_margins: dict[str, dict[str, float]] = field(default_factory=dict)

    def margins(self, model: str) -> dict[str, float]:
        """The baseline margin of each gated metric of ``model``."""
        own = self.baseline_margins.get(model, {})
        return {m: float(own.get(m, self.baseline_margin)) for m in self.thresholds.get(model, {})}

    @classmethod
    def load(
        cls, profile: str = "demo", path: Path = GATE_CONFIG, overrides: Mapping[str, Mapping[str, float]] | None = None
    ) -> GateConfig:
        """Read ``config/gate.yaml`` for ``profile``; ``overrides`` replace single thresholds
        (never the baseline margins: the baseline rule holds whatever the thresholds say)."""
        raw = yaml.safe_load(Path(path).read_text())
        if profile not in raw.get("profiles", {}):
            raise ValueError(f"gate config {path} has no profile {profile!r}; known: {sorted(raw.get('profiles', {}))}")
        prof = raw["profiles"][profile]
        thresholds = {m: dict(v or {}) for m, v in prof.get("thresholds", {}).items()}
        for model, metrics in (overrides or {}).items():
            thresholds.setdefault(model, {}).update({k: float(v) for k, v in metrics.items()})
        margins: dict[str, dict[str, float]] = {}
        for level in (raw, prof):  # profile entries override the file-wide ones
            for model, metrics in (level.get("baseline_margins") or {}).items():
                margins.setdefault(model, {}).update({k: float(v) for k, v in metrics.items()})
        return cls(
            thresholds=thresholds,
            tolerance=float(prof.get("tolerance", raw.get("tolerance", 0.02))),
            profile=profile,
            baseline_margin=float(prof.get("baseline_margin", raw.get("baseline_margin", BASELINE_MARGIN))),
            baseline_margins=margins,
        )


@dataclass
class GateDecision:
    """Outcome of the gate for one candidate version."""

    model: str
    version: str
    promoted: bool
    reasons: list[str] = field(default_factory=list)
    previous_champion: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    baselines: list[dict[str, Any]] = field(default_factory=list)  # baseline_checks rows

    @property
    def decision(self) -> str:
        return "promoted" if self.promoted else "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision}


def _measured(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def baseline_kind(model: str, metric: str) -> str:
    """Name of the trivial model behind ``baseline_<metric>`` (for reasons and tables)."""
    return BASELINE_KIND.get(metric) or BASELINE_KIND.get(model, "trivial")


def baseline_checks(
    model: str, candidate: Mapping[str, float], metrics: Any, margin: float | Mapping[str, float] = BASELINE_MARGIN
) -> list[dict[str, Any]]:
    """Pure: one row per metric in ``metrics``, comparing it with ``baseline_<metric>`` of
    the same candidate: ``{metric, kind, value, baseline, over, margin, passed}``. A
    metric or baseline that is missing or NaN does not pass (``over`` is then ``None``)."""
    rows = []
    for metric in sorted(metrics):
        m = float(margin.get(metric, BASELINE_MARGIN) if isinstance(margin, Mapping) else margin)
        value, base = candidate.get(metric), candidate.get(f"baseline_{metric}")
        ok = _measured(value) and _measured(base)
        over = float(value) - float(base) if ok else None
        rows.append(
            {
                "metric": metric,
                "kind": baseline_kind(model, metric),
                "value": float(value) if _measured(value) else None,
                "baseline": float(base) if _measured(base) else None,
                "over": over,
                "margin": m,
                # tolerance for float noise: 0.39 - 0.29 beats a 0.10 margin
                "passed": bool(ok and over >= m - 1e-9),
            }
        )
    return rows


def decide(
    model: str,
    candidate: Mapping[str, float],
    thresholds: Mapping[str, float],
    tolerance: float,
    champion: Mapping[str, float] | None,
    margin: float | Mapping[str, float] = BASELINE_MARGIN,
) -> tuple[bool, list[str]]:
    """Pure gate rule: every threshold holds, every gated metric beats its trivial baseline
    by ``margin`` (a number, or ``{metric: margin}``), and no regression beyond ``tolerance``.

    All gate metrics are "higher is better". A metric named in the thresholds but missing
    (or NaN) in the candidate fails the gate (it was not measured, so it cannot be trusted);
    so does a gated metric without its ``baseline_<metric>``: nothing shows it beat chance.
    The baseline rule holds whatever the thresholds are, so a threshold set at or below
    chance cannot promote a model that learned nothing.
    """
    reasons: list[str] = []
    ok = True
    for metric, minimum in sorted(thresholds.items()):
        value = candidate.get(metric)
        if not _measured(value):
            ok = False
            reasons.append(f"{metric} missing (threshold {minimum:.4f})")
        elif value < minimum:
            ok = False
            reasons.append(f"{metric}={value:.4f} < threshold {minimum:.4f}")
        else:
            reasons.append(f"{metric}={value:.4f} >= threshold {minimum:.4f}")
    for row in baseline_checks(model, candidate, thresholds, margin):
        metric, kind, m = row["metric"], row["kind"], row["margin"]
        if row["value"] is None:
            continue  # already failed above as missing
        ok = ok and row["passed"]
        if row["baseline"] is None:
            reasons.append(
                f"{metric}: no {kind} baseline (baseline_{metric}) measured, so it cannot be shown to beat chance"
            )
        elif row["passed"]:
            reasons.append(
                f"{metric}={row['value']:.4f} beats the {kind} baseline {row['baseline']:.4f} "
                f"by {row['over']:.4f} (margin {m:.2f})"
            )
        else:
            reasons.append(
                f"{metric}={row['value']:.4f} does not beat the {kind} baseline {row['baseline']:.4f} by {m:.2f}"
            )
    if champion:
        for metric in sorted(set(thresholds) & set(champion)):
            value, best = candidate.get(metric), champion[metric]
            if _measured(value) and value < best - tolerance:
                ok = False
                reasons.append(f"{metric}={value:.4f} regresses champion {best:.4f} by more than {tolerance:.4f}")
    else:
        reasons.append("no current champion")
    return ok, reasons


def baseline_table(model: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pure: one row per metric ``m`` of ``metrics`` that has a ``baseline_m``:
    ``{metric, kind, value, baseline, over}`` (``over`` = value - baseline)."""
    names = [k for k in metrics if not k.startswith("baseline_") and f"baseline_{k}" in metrics]
    return [
        {k: r[k] for k in ("metric", "kind", "value", "baseline", "over")}
        for r in baseline_checks(model, metrics, names, 0.0)
    ]
