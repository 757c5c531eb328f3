"""The promotion gate rejects chance: every gated metric must beat the trivial baseline of its
own evaluation set (majority class, random ranking, empty detector, all-background parser)
by the configured margin, whatever the thresholds say.

The end-to-end cases evaluate real do-nothing models (constant outputs) with the training
tasks' own ``evaluate`` on a small dev training set, then apply ``gate.decide`` with the
shipped demo gate config.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import gate, registry
from pipelines.train import metrics as M


@pytest.fixture(scope="module")
def dev_set(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.ingest.world import world_manifest_rows
    from pipelines.train.devset import training_set_from_rows

    return training_set_from_rows(
        world_manifest_rows(small_world), small_world, tmp_path_factory.mktemp("ts") / "gate", seed=0
    )


def _test_rows(ts: Path, model: str):
    from pipelines.manifests import load_manifest

    df = load_manifest(ts, model)
    return df[df["split"] == "test"].reset_index(drop=True)


def _decide_shipped(model: str, metrics: dict, **overrides) -> tuple[bool, list[str]]:
    cfg = gate.GateConfig.load("demo", overrides={model: overrides} if overrides else None)
    return gate.decide(model, metrics, cfg.thresholds[model], cfg.tolerance, None, cfg.margins(model))


# ------------------------------------------------------------------------ the pure rule


def test_rule_meets_threshold_but_not_baseline_margin() -> None:
    cand = {"acc_min": 0.65, "baseline_acc_min": 0.60}
    ok, reasons = gate.decide("tagger", cand, {"acc_min": 0.60}, 0.05, None, 0.10)
    assert not ok
    assert "acc_min=0.6500 >= threshold 0.6000" in reasons  # the threshold alone would pass
    assert "acc_min=0.6500 does not beat the majority-class baseline 0.6000 by 0.10" in reasons


def test_rule_missing_or_nan_baseline_fails() -> None:
    for cand in ({"recall_at_5": 0.9}, {"recall_at_5": 0.9, "baseline_recall_at_5": float("nan")}):
        ok, reasons = gate.decide("embedder", cand, {"recall_at_5": 0.5}, 0.05, None)
        assert not ok
        assert any("no random-ranking baseline (baseline_recall_at_5)" in r for r in reasons), reasons


def test_rule_nan_metric_is_missing_not_passing() -> None:
    ok, reasons = gate.decide("parser", {"miou": float("nan"), "baseline_miou": 0.06}, {"miou": 0.0}, 0.05, None)
    assert not ok and reasons[0] == "miou missing (threshold 0.0000)"


def test_rule_clear_winner_passes_and_margins_per_metric() -> None:
    cand = {"miou": 0.60, "baseline_miou": 0.06, "pixel_acc": 0.91, "baseline_pixel_acc": 0.85}
    thresholds = {"miou": 0.45, "pixel_acc": 0.88}
    ok, reasons = gate.decide("parser", cand, thresholds, 0.05, None, {"miou": 0.10, "pixel_acc": 0.05})
    assert ok, reasons
    assert "miou=0.6000 beats the all-background baseline 0.0600 by 0.5400 (margin 0.10)" in reasons
    ok, reasons = gate.decide("parser", cand, thresholds, 0.05, None, 0.10)  # one margin for all
    assert not ok and "pixel_acc=0.9100 does not beat the all-background baseline 0.8500 by 0.10" in reasons
    # exactly the margin (up to float noise) passes: 0.39 - 0.29 is 0.0999999... in floats
    ok, _ = gate.decide("tagger", {"acc_min": 0.39, "baseline_acc_min": 0.29}, {"acc_min": 0.0}, 0.05, None, 0.10)
    assert ok


def test_rule_applies_whatever_the_thresholds_say() -> None:
    # thresholds lowered to zero by a run override: the baseline rule still rejects chance
    ok, reasons = _decide_shipped(
        "tagger",
        {"acc_min": 0.31, "baseline_acc_min": 0.29, "acc_category_real": 0.5, "baseline_acc_category_real": 0.45},
        acc_min=0.0,
        acc_category_real=0.0,
    )
    assert not ok
    assert "acc_min=0.3100 does not beat the majority-class baseline 0.2900 by 0.10" in reasons
    assert "acc_category_real=0.5000 does not beat the majority-class baseline 0.4500 by 0.10" in reasons


def test_baseline_table_rows() -> None:
    rows = gate.baseline_table(
        "detector",
        {
            "map_50": 0.6,
            "baseline_map_50": 0.0,
            "map_50_95": 0.3,
            "baseline_map_50_95": 0.0,
            "top_box_iou_real": 0.4,
            "top_category_acc_real": 0.7,
            "baseline_top_category_acc_real": 0.3,
        },
    )
    assert [r["metric"] for r in rows] == ["map_50", "map_50_95", "top_category_acc_real"]
    assert rows[0] == {"metric": "map_50", "kind": "empty-detector", "value": 0.6, "baseline": 0.0, "over": 0.6}
    assert rows[2]["kind"] == "majority-class" and rows[2]["over"] == pytest.approx(0.4)
    md = registry.baseline_markdown("detector", rows)
    assert "| map_50 | 0.6000 | 0.0000 | empty-detector | 0.6000 |" in md


def test_shipped_gate_config() -> None:
    demo, full = gate.GateConfig.load("demo"), gate.GateConfig.load("full")
    # the demo gate checks the same metrics as the full one (the targets), never above them
    for model, metrics in full.thresholds.items():
        assert set(demo.thresholds[model]) == set(metrics)
        assert all(0.0 < demo.thresholds[model][m] <= v for m, v in metrics.items())
    assert full.thresholds["tagger"] == {"acc_min": 0.85, "acc_category_real": 0.92}
    assert full.thresholds["embedder"] == {"recall_at_5": 0.75, "precision_at_5_real": 0.88}
    assert full.thresholds["parser"] == {"miou": 0.65, "pixel_acc": 0.93}
    for cfg in (demo, full):
        assert cfg.margins("parser") == {"miou": 0.10, "pixel_acc": 0.05}
        assert cfg.margins("tagger") == {"acc_min": 0.10, "acc_category_real": 0.10}
    # threshold overrides never touch the margins
    assert gate.GateConfig.load("demo", overrides={"parser": {"miou": 0.0}}).margins("parser")["miou"] == 0.10


# ------------------------------------------------------------ ties in the retrieval metrics


def test_constant_embeddings_score_the_random_baseline_exactly() -> None:
    from pipelines.train import metrics as M

    rng = np.random.default_rng(0)
    g_ids = ["a", "b", "c", "d", "e", "f", "g", "h"] * 3
    q_ids = ["a"] * 10 + list("bcdefgh")  # most queries ask for the first gallery identity
    v = rng.normal(size=(1, 16)).astype(np.float32)
    v /= np.linalg.norm(v)
    q, g = np.repeat(v, len(q_ids), 0), np.repeat(v, len(g_ids), 0)
    # an index-ordered tie-break would rank "a" first for every query: recall@1 = 10/17
    r = M.recall_at_k(q, q_ids, g, g_ids, (1, 5, 20))
    for k in (1, 5, 20):
        assert r[k] == pytest.approx(M.random_recall_at_k(q_ids, g_ids, k), abs=1e-12)
    # ulp-level noise (different BLAS kernel paths) still counts as a tie
    gn = g + rng.normal(scale=1e-8, size=g.shape).astype(np.float32)
    assert M.recall_at_k(q, q_ids, gn, g_ids, (1,))[1] == pytest.approx(r[1], abs=1e-12)
    labels = ["x"] * 12 + ["y"] * 5
    mask = np.array([True] * 6 + [False] * 6 + [True] * 5)
    assert M.precision_at_k(q, labels, 5, mask) == pytest.approx(M.random_precision_at_k(labels, mask), abs=1e-12)
    # partial ties: the certain hits count in full, the tie by expectation
    g2 = np.array([[1, 0], [0.6, 0.8], [0.6, 0.8], [0.6, 0.8]], np.float32)
    r2 = M.recall_at_k(np.array([[1, 0]], np.float32), ["z"], g2, ["a", "z", "b", "c"], (1, 2))
    assert r2[1] == 0.0 and r2[2] == pytest.approx(1 / 3)


# ------------------------------------------------- real do-nothing models, end to end


class _ConstantTagger(torch.nn.Module):
    """Predicts one fixed class per head whatever the crop: the majority class of the
    evaluation rows (the best any constant tagger can do)."""

    def __init__(self, heads: dict[str, list[str]], choice: dict[str, int]) -> None:
        super().__init__()
        self.bias = {
            h: torch.full((len(v),), -10.0).index_fill_(0, torch.tensor([choice.get(h, 0)]), 10.0)
            for h, v in heads.items()
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {h: b.expand(len(x), -1).clone() for h, b in self.bias.items()}


def test_constant_tagger_is_rejected(dev_set: Path) -> None:
    from pipelines.train.tagger import TaggerDataset, TaggerTask

    task = TaggerTask()
    df = _test_rows(dev_set, "tagger")
    cfg = task.prepare({"crop_size": 32, "seed": 0, "feature_cache": False}, df)
    targets = TaggerDataset(df, False, 0, cfg).targets
    # the majority class with each product counted once, as the evaluation counts them
    ident = df["identity"].to_numpy()
    majority = {
        h: int(np.bincount(t[t >= 0], weights=M.group_weights(ident[t >= 0])).argmax())
        for h, t in targets.items()
        if (t >= 0).any()
    }
    metrics, _ = task.evaluate(_ConstantTagger(cfg["heads"], majority), df, cfg, None)
    assert metrics["acc_min"] <= metrics["baseline_acc_min"] + 1e-12
    for h in majority:
        assert metrics[f"acc_{h}"] == pytest.approx(metrics[f"baseline_acc_{h}"])
    for overrides in ({}, {"acc_min": 0.0, "acc_category_real": 0.0}):
        ok, reasons = _decide_shipped("tagger", metrics, **overrides)
        assert not ok
        assert any(r.startswith("acc_min=") and "does not beat the majority-class baseline" in r for r in reasons), (
            reasons
        )


class _ConstantEmbedder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 8)
        out[:, 3] = 1.0
        return out


def test_constant_embedder_is_rejected(dev_set: Path) -> None:
    from pipelines.train.embedder import EmbedderTask

    df = _test_rows(dev_set, "embedder")
    cfg = {"crop_size": 32, "seed": 0, "feature_cache": False, "dim": 8}
    metrics, _ = EmbedderTask().evaluate(_ConstantEmbedder(), df, cfg, None)
    for k in (1, 5, 20):  # every gallery item ties: exactly the random ranking's expectation
        assert metrics[f"recall_at_{k}"] == pytest.approx(metrics[f"baseline_recall_at_{k}"], abs=1e-9)
    for overrides in ({}, {"recall_at_5": 0.0, "precision_at_5_real": 0.0}):
        ok, reasons = _decide_shipped("embedder", metrics, **overrides)
        assert not ok
        assert any(
            r.startswith("recall_at_5=") and "does not beat the random-ranking baseline" in r for r in reasons
        ), reasons


class _EmptyDetector(torch.nn.Module):
    def forward(self, images):
        return [
            {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
            for _ in images
        ]


def test_empty_detector_is_rejected(dev_set: Path) -> None:
    from pipelines.train.detector import DetectorTask

    task = DetectorTask()
    df = _test_rows(dev_set, "detector")
    cfg = task.prepare({"image_size": 64, "seed": 0}, df)
    metrics, _ = task.evaluate(_EmptyDetector(), df, cfg, None)
    assert metrics["map_50"] == metrics["baseline_map_50"] == 0.0
    assert metrics["baseline_map_50_95"] == 0.0
    for overrides in ({}, {"map_50": 0.0}):
        ok, reasons = _decide_shipped("detector", metrics, **overrides)
        assert not ok
        assert "map_50=0.0000 does not beat the empty-detector baseline 0.0000 by 0.10" in reasons


class _BackgroundParser(torch.nn.Module):
    def __init__(self, n: int, bg: int) -> None:
        super().__init__()
        self.n, self.bg = n, bg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), self.n, *x.shape[-2:])
        out[:, self.bg] = 1.0
        return out


def test_all_background_parser_is_rejected(dev_set: Path) -> None:
    from pipelines.train.parser import ParserTask

    task = ParserTask()
    df = _test_rows(dev_set, "parser")
    cfg = task.prepare({"image_size": 64, "seed": 0}, df)
    model = _BackgroundParser(len(cfg["classes"]), list(cfg["classes"]).index("background"))
    metrics, _ = task.evaluate(model, df, cfg, None)
    assert metrics["miou"] == metrics["baseline_miou"] and metrics["pixel_acc"] == metrics["baseline_pixel_acc"]
    assert (
        0 < metrics["baseline_miou"] < 0.2
        and 0.5 < metrics["baseline_pixel_acc"] < 1
        and not math.isnan(metrics["miou"])
    )
    for overrides in ({}, {"miou": 0.0, "pixel_acc": 0.0}):
        ok, reasons = _decide_shipped("parser", metrics, **overrides)
        assert not ok
        assert any(r.startswith("miou=") and "does not beat the all-background baseline" in r for r in reasons)
        assert any(r.startswith("pixel_acc=") and "by 0.05" in r for r in reasons)


def test_each_product_counts_once() -> None:
    """A product seen in 8 crops weighs as much as one seen once: its crops' share of the
    rows does not decide a head's accuracy (nor its baseline)."""
    ident = np.array(["a"] * 8 + ["b", "c", None])
    true = np.array([0] * 8 + [1, 1, 1])
    pred = np.array([1] * 8 + [1, 1, 1])  # wrong on every crop of a, right elsewhere
    w = M.group_weights(ident)
    assert w.sum() == pytest.approx(1.0) and w[0] == pytest.approx(1 / 8 / 4) and w[-1] == pytest.approx(1 / 4)
    assert M.weighted_accuracy(true, pred, w) == pytest.approx(3 / 4)  # per crop: 3 / 11
    assert M.weighted_majority_accuracy(true, w) == pytest.approx(3 / 4)  # class 1 holds 3 of 4 products
    assert M.majority_accuracy(true) == pytest.approx(8 / 11)
