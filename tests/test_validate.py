"""Validation stage: every critical expectation trips on its fixture and stops with a message
naming it and linking the report; a clean snapshot passes; quarantine and curated catalog;
annotation import; the real photos' Not sure / Skip / Other are quarantined and reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipelines.settings import Settings
from pipelines.validate import CriticalExpectationFailed
from tests.helpers.snapshots import fabricate_snapshot


@pytest.fixture(scope="module")
def vs(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Isolated settings: GX project, runs and data tree under a temp root."""
    return Settings(root=tmp_path_factory.mktemp("vproj"))


def _validate(snapshot: Path, s: Settings, **kw):
    from pipelines.validate.checkpoint import validate_snapshot

    return validate_snapshot(snapshot, s=s, **kw)


def _every_fifth(col: str, value):
    def mutate(p: pd.DataFrame, i: pd.DataFrame):
        p = p.copy()
        p[col] = p[col].astype(object)
        p.loc[p.index % 5 == 0, col] = value
        return p, i

    return mutate


def _drop_column(col: str):
    return lambda p, i: (p.drop(columns=[col]), i)


def _dup_rows(p: pd.DataFrame, i: pd.DataFrame):
    return pd.concat([p, p.iloc[:3]], ignore_index=True), i


def _price_text(p: pd.DataFrame, i: pd.DataFrame):
    return p.assign(price=p["price"].map(lambda x: f"{x:.2f} EUR")), i


def _gif(p: pd.DataFrame, i: pd.DataFrame):
    i = i.copy()
    i.loc[i.index % 4 == 0, "format"] = "GIF"
    return p, i


def _stale(p: pd.DataFrame, i: pd.DataFrame):
    return p.assign(fetched_at=pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=30)), i


SNAPSHOT_CRITICAL = {
    "products.columns": _drop_column("currency"),
    "products.price_type": _price_text,
    "products.required_present": _every_fifth("title", None),
    "products.product_id_unique": _dup_rows,
    "products.price_positive": _every_fifth("price", -1.0),
    "products.category_in_taxonomy": _every_fifth("category", "spacesuit"),
    "images.format_allowed": _gif,
    "labels.label_in_vocabulary": _every_fifth("category", "Not sure"),
    "snapshot.freshness": _stale,
}


def test_every_critical_expectation_has_a_fixture() -> None:
    from pipelines.validate.config import load_validation_config

    cfg = load_validation_config()
    critical = {k for k, v in cfg["severity"].items() if v == "critical"}
    covered = set(SNAPSHOT_CRITICAL) | {"snapshot.row_drop"} | set(ANNOTATION_CRITICAL)
    assert critical == covered


@pytest.mark.parametrize("expectation", sorted(SNAPSHOT_CRITICAL))
def test_critical_fixture_stops_with_message(expectation: str, vs: Settings, tmp_path: Path) -> None:
    snap = fabricate_snapshot(tmp_path / f"bad-{expectation}", n=30, mutate=SNAPSHOT_CRITICAL[expectation])
    with pytest.raises(CriticalExpectationFailed) as err:
        _validate(snap, vs)
    ids = [f["id"] for f in err.value.failed]
    assert expectation in ids
    msg = str(err.value)
    assert expectation in msg and "report: " in msg
    assert err.value.report.endswith(".html") and Path(err.value.report.removeprefix("file://")).exists()
    # Downstream refuses a failed run too (the DAG's later tasks re-check it).
    from pipelines.validate.checkpoint import ensure_passed, runs_dir

    with pytest.raises(CriticalExpectationFailed):
        ensure_passed(runs_dir(vs) / err.value.snapshot)


def test_row_drop_against_previous_snapshot(vs: Settings, tmp_path: Path) -> None:
    snap = fabricate_snapshot(tmp_path / "shrunk", n=20)
    with pytest.raises(CriticalExpectationFailed, match=r"snapshot\.row_drop"):
        _validate(snap, vs, previous_rows=40)
    assert _validate(snap, vs, previous_rows=21)["status"] in ("passed", "warning")
    # Without an explicit count, the last passed snapshot of the same malls is the reference.
    bigger = fabricate_snapshot(tmp_path / "grown", n=24, seed=9)
    assert _validate(bigger, vs)["previous_rows"] == 20


def test_clean_snapshot_passes(vs: Settings, tmp_path: Path) -> None:
    snap = fabricate_snapshot(tmp_path / "clean", n=60, seed=1)
    rep = _validate(snap, vs, previous_rows=0)
    assert rep["status"] in ("passed", "warning"), rep["critical_failed"]
    assert rep["critical_failed"] == []
    assert rep["curated_rows"] == 60 and rep["quarantine_total"] == 0
    # Warnings pass and are reported (the fabricated long tail has rare classes).
    assert set(rep["warnings_failed"]) <= {"label_classes.min_examples", "images.near_dup_rate"}
    assert Path(rep["summary"]).exists()
    assert all(r["severity"] in ("critical", "warning") for r in rep["results"])


def test_quarantine_rows_with_reason_and_curated_catalog(vs: Settings, tmp_path: Path) -> None:
    def mutate(p: pd.DataFrame, i: pd.DataFrame):
        p, i = p.copy(), i.copy()
        p.loc[3, "price"] = 0.0  # 1 of 40: under `mostly`, quarantined, not critical
        p.loc[5, "currency"] = "XYZ"
        i.loc[i["product_id"] == p.loc[7, "product_id"], "width"] = 20  # every image too small
        return p, i

    snap = fabricate_snapshot(tmp_path / "some-bad", n=40, seed=2, mutate=mutate)
    rep = _validate(snap, vs, previous_rows=0)  # 0: nothing to compare with
    assert rep["critical_failed"] == []
    q = pd.read_parquet(Path(rep["run_dir"]) / "quarantine.parquet")
    reasons = dict(zip(q["product_id"], q["reason"], strict=False))
    assert reasons["demo-jsonld:p00003"] == "price not > 0"
    assert reasons["demo-jsonld:p00005"] == "unknown currency"
    assert "image smaller than 64 px" in set(q.loc[q["product_id"] == "demo-jsonld:p00007", "reason"])
    catalog = pd.read_parquet(Path(rep["run_dir"]) / "catalog.parquet")
    assert len(catalog) == 37
    assert not set(catalog["product_id"]) & {"demo-jsonld:p00003", "demo-jsonld:p00005", "demo-jsonld:p00007"}


# ---------------------------------------------------------------------------- annotations
@pytest.fixture(scope="module")
def imported(small_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.validate.annotations import import_annotations

    out = tmp_path_factory.mktemp("imports") / "small"
    return import_annotations(small_world, out, dvc=False)


def test_import_is_content_addressed_and_idempotent(imported: Path, small_world: Path) -> None:
    from pipelines.validate.annotations import import_annotations

    coco = json.loads((imported / "coco.json").read_text())
    im = coco["images"][0]
    assert im["file_name"] == f"images/{im['sha256'][:2]}/{im['sha256']}.jpg"
    assert (imported / im["file_name"]).exists() and (imported / im["parsing_png"]).exists()
    before = (imported / "import.json").read_text()
    assert import_annotations(small_world, imported, dvc=False) == imported
    assert (imported / "import.json").read_text() == before
    assert any(i["decodes"] is False for i in coco["images"])  # the world's broken files


def test_import_crops_are_worn_and_visible(imported: Path) -> None:
    """Garment crops come from street scenes and model shots, never from mostly hidden
    garments (their box shows what covers them); the detector keeps every box."""
    from pipelines.validate.annotations import import_rows

    coco = json.loads((imported / "coco.json").read_text())
    role = {im["file_name"]: im.get("role") for im in coco["images"]}
    hidden = [a for a in coco["annotations"] if a.get("visible_fraction", 1.0) < 0.5]
    assert hidden, "the small world should have occluded garments"
    rows = import_rows(imported, min_visible=0.5)
    assert {role[r["image"]] for r in rows["tagger"]} == {"street", "model"}
    n_boxes = sum(len(json.loads(r["boxes"])) for r in rows["detector"])
    everything = import_rows(imported, min_visible=0.0)
    assert sum(len(json.loads(r["boxes"])) for r in everything["detector"]) == n_boxes
    assert len(everything["tagger"]) - len(rows["tagger"]) == sum(
        1
        for a in hidden
        if role.get(next(im["file_name"] for im in coco["images"] if im["id"] == a["image_id"])) in ("street", "model")
    )


def _tamper(imported: Path, dest: Path, fn) -> Path:
    shutil.copytree(imported, dest)
    coco = json.loads((dest / "coco.json").read_text())
    for k, a in enumerate(coco["annotations"]):
        if k % 2 == 0:
            fn(a)
    (dest / "coco.json").write_text(json.dumps(coco))
    return dest


def _box_out(a):
    a["bbox"] = [a["bbox"][0] + 5000, a["bbox"][1], a["bbox"][2], a["bbox"][3]]


def _empty_mask(a):
    import numpy as np
    from pycocotools import mask as mask_utils

    h, w = a["segmentation"]["size"]
    rle = mask_utils.encode(np.zeros((h, w), dtype=np.uint8, order="F"))
    a["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}


def _bad_category(a):
    a["category_id"] = 99


ANNOTATION_CRITICAL = {
    "annotations.box_inside_image": _box_out,
    "annotations.mask_non_empty": _empty_mask,
    "annotations.category_id_valid": _bad_category,
}


@pytest.mark.parametrize("expectation", sorted(ANNOTATION_CRITICAL))
def test_annotation_critical_fixture(expectation: str, imported: Path, vs: Settings, tmp_path: Path) -> None:
    snap = fabricate_snapshot(tmp_path / "snap", n=20)
    bad = _tamper(imported, tmp_path / "import", ANNOTATION_CRITICAL[expectation])
    with pytest.raises(CriticalExpectationFailed) as err:
        _validate(snap, vs, annotations=bad)
    assert expectation in [f["id"] for f in err.value.failed]
    assert expectation in str(err.value)


def test_clean_annotations_pass(imported: Path, vs: Settings, tmp_path: Path) -> None:
    snap = fabricate_snapshot(tmp_path / "snap-ann", n=20, seed=4)
    rep = _validate(snap, vs, annotations=imported, previous_rows=0)
    ann = [r for r in rep["results"] if r["suite"] == "annotations"]
    assert len(ann) == 3 and all(r["success"] for r in ann)


# ---------------------------------------------------------------------------- real photos
@pytest.mark.shared_data
def test_real_photos_not_sure_skip_other_quarantined(shared_photos: Path, tmp_path: Path) -> None:
    """A snapshot shaped like the photo-mall crawl: every labels.csv row, served label as category."""
    import csv

    from pipelines.validate.report import build_summary

    rows = list(csv.DictReader((shared_photos / "labels.csv").open()))

    def as_photos(p: pd.DataFrame, i: pd.DataFrame):
        labels = [r["label"] for r in rows][: len(p)]
        return p.assign(category=labels), i

    s = Settings(root=tmp_path / "proj")
    snap = fabricate_snapshot(
        tmp_path / "photos-snap", n=len(rows), mall="photos", images_per_product=1, near_dup_every=0, mutate=as_photos
    )
    rep = _validate(snap, s)
    assert rep["critical_failed"] == []
    q = pd.read_parquet(Path(rep["run_dir"]) / "quarantine.parquet")
    caught = set(q.loc[q["reason"] == "label not in vocabulary", "value"])
    assert caught == {"Not sure", "Skip", "Other"}
    expected = sum(r["label"] in ("Not sure", "Skip", "Other") for r in rows)
    assert rep["quarantine_by_reason"]["label not in vocabulary"] == expected
    page = build_summary(s).read_text()
    assert "label not in vocabulary" in page and "Not sure" in page
    # The catalog stores taxonomy categories; the mall's own label stays in `label`.
    catalog = pd.read_parquet(Path(rep["run_dir"]) / "catalog.parquet")
    from models.taxonomy import CATEGORIES

    assert set(catalog["category"]) <= set(CATEGORIES)
    assert set(catalog.loc[catalog["label"] == "Longsleeve", "category"]) == {"longsleeve"}
    assert set(catalog.loc[catalog["label"] == "Outwear", "category"]) == {"outerwear"}


def _relabel(labels: list[str]):
    def mutate(p: pd.DataFrame, i: pd.DataFrame):
        return p.assign(category=[labels[k % len(labels)] for k in range(len(p))]), i

    return mutate


def test_mall_labels_normalised_to_taxonomy(vs: Settings, tmp_path: Path) -> None:
    """Any mall's labels go through models.taxonomy.to_category: the catalog's `category` is the
    taxonomy category, `label` the mall's own; Not sure / unknown labels are quarantined naming
    the label."""
    labels = [
        "T-Shirt",
        "Longsleeve",
        "Polo",
        "Hoodie",
        "Blazer",
        "Blouse",
        "dress",
        "Pants",
        "Shoes",
        "Outwear",
        "t-shirt",
        "Hat",
        "Skirt",
        "Shorts",
        "Shirt",
        "Top",
        "Body",
        "Undershirt",
        "Dress",
        "Not sure",
        *(["T-Shirt", "Pants", "Shoes", "Dress"] * 8),
        "Hovercraft",
    ]
    snap = fabricate_snapshot(
        tmp_path / "labels",
        n=len(labels),
        mall="demo-jsonld",
        images_per_product=1,
        near_dup_every=0,
        mutate=_relabel(labels),
    )
    rep = _validate(snap, vs, previous_rows=0)
    assert rep["critical_failed"] == []
    q = pd.read_parquet(Path(rep["run_dir"]) / "quarantine.parquet")
    assert set(q.loc[q["reason"] == "label not in vocabulary", "value"]) == {"Not sure", "Hovercraft"}
    assert set(q.loc[q["reason"] == "category not in taxonomy", "value"]) == {"Hovercraft"}
    catalog = pd.read_parquet(Path(rep["run_dir"]) / "catalog.parquet")
    assert len(catalog) == len(labels) - 2
    to = dict(zip(catalog["label"], catalog["category"], strict=False))
    assert to["Longsleeve"] == "longsleeve" and to["Polo"] == "polo" and to["Hoodie"] == "hoodie"
    assert to["Blazer"] == "blazer" and to["Blouse"] == "blouse" and to["Outwear"] == "outerwear"
    assert to["T-Shirt"] == to["t-shirt"] == "t-shirt" and to["dress"] == to["Dress"] == "dress"
    assert set(rep["class_counts"]) <= set(catalog["category"])


def test_committed_gx_project_matches_config() -> None:
    """expectations/gx holds every suite with severities; regenerate with `tailor validate init`."""
    from pipelines.settings import PROJECT_ROOT
    from pipelines.validate.config import load_validation_config
    from pipelines.validate.suites import SUITES, _expectation, _signature, specs

    cfg = load_validation_config()
    gx_dir = PROJECT_ROOT / "expectations" / "gx"
    assert (gx_dir / "great_expectations.yml").exists()
    for suite in SUITES:
        stored = json.loads((gx_dir / "expectations" / f"{suite}.json").read_text())
        assert all(e["meta"]["severity"] in ("critical", "warning") for e in stored["expectations"])
        assert (gx_dir / "checkpoints" / f"tailor_{suite}.json").exists()
        wanted = [_expectation(sp, cfg) for sp in specs(cfg) if sp.suite == suite]
        have = sorted(
            (e["type"], repr(sorted(e["kwargs"].items())), repr(sorted(e["meta"].items())))
            for e in stored["expectations"]
        )
        assert have == _signature(wanted), f"{suite}: run `tailor validate init` after editing config"
