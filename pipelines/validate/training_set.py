"""Write a training set (see :mod:`pipelines.manifests`) from a passed validation run.

Curated products come from the run directory; splits are made by product and
near-duplicate group (:mod:`pipelines.validate.splits`); the train split is balanced per
model and label (:mod:`pipelines.validate.balance`, ``config/balancing.yaml``); before/after
histograms are drawn into ``histograms/``. Rows of an annotation import (detector, parser,
street crops for tagger/embedder) follow the split of the products they show.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.manifests import MODEL_COLUMNS, MODELS, SPLITS, validate_manifest_frame
from pipelines.settings import Settings, get_settings
from pipelines.validate.balance import balance, class_counts, histogram_png
from pipelines.validate.checkpoint import ensure_passed, site_dir
from pipelines.validate.config import (
    balancing_for,
    load_balancing_config,
    load_validation_config,
    source_of,
)
from pipelines.validate.splits import assign_splits, product_groups

_RANK = {"train": 0, "val": 1, "test": 2}


def _attribute_names() -> list[str]:
    from models.taxonomy import ATTRIBUTES

    return list(ATTRIBUTES)


def _columns(model: str) -> list[str]:
    cols = ["image", "split", "source", "repeat", "weight", *MODEL_COLUMNS[model]]
    if model in ("tagger", "embedder", "detector"):
        cols.append("label")  # the mall's own label (a real photo's: the real-photo head and metrics)
    if model == "tagger":
        cols += _attribute_names()
    return cols


def training_set_id(report: dict[str, Any], bal_cfg: dict[str, Any], val_cfg: dict[str, Any]) -> str:
    """``<validation run>-<hash of annotations + balancing + split and crop config>`` (deterministic)."""
    h = hashlib.sha256(
        json.dumps(
            [
                report.get("annotations_sha256"),
                bal_cfg,
                val_cfg.get("splits"),
                val_cfg.get("crops"),
                val_cfg.get("product_shots"),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:8]
    return f"{report['run']}-{h}"


def build_training_set(
    run_dir: Path,
    out: Path | None = None,
    s: Settings | None = None,
    balancing: dict[str, Any] | None = None,
    cfg: dict[str, Any] | None = None,
) -> Path:
    """Write the training set of validation run ``run_dir``; return its directory.

    Raises :class:`CriticalExpectationFailed` when the run failed. Idempotent: an existing
    finished training set with the same id is returned untouched.
    """
    s = s or get_settings()
    report = ensure_passed(Path(run_dir))
    cfg = cfg or load_validation_config()
    bal_cfg = balancing or load_balancing_config()
    ann_dir = Path(report["annotations"]) if report.get("annotations") else None
    if ann_dir is not None:
        report["annotations_sha256"] = json.loads((ann_dir / "import.json").read_text()).get("content_sha256")
    ts_id = training_set_id(report, bal_cfg, cfg)
    out = Path(out) if out else (s or get_settings()).training_sets_dir / ts_id
    if (out / "training_set.json").exists():
        return out
    snapshot = Path(report["snapshot"])
    roots = [snapshot.resolve()] + ([ann_dir.resolve()] if ann_dir else [])
    data_root_abs = Path(os.path.commonpath([str(r) for r in roots])) if len(roots) > 1 else snapshot.resolve()
    catalog = pd.read_parquet(Path(run_dir) / "catalog.parquet")
    images = pd.read_parquet(Path(run_dir) / "images.parquet")
    quarantine = pd.read_parquet(Path(run_dir) / "quarantine.parquet")
    split_cfg = cfg.get("splits") or {}
    seed = int(split_cfg.get("seed", 0))
    fractions = split_cfg.get("fractions") or {"train": 0.8, "val": 0.1, "test": 0.1}
    # Splits by product + near-duplicate group, stratified by category.
    groups = product_groups(images, catalog["product_id"])
    cat_of = dict(zip(catalog["product_id"], catalog["category"], strict=True))
    split_of = assign_splits(groups, cat_of, fractions, seed)
    frames = _snapshot_rows(catalog, images, split_of, snapshot, data_root_abs, cfg)
    _add_product_shot_boxes(frames, data_root_abs, cfg.get("product_shots") or {}, seed)
    if ann_dir is not None:
        _add_import_rows(frames, ann_dir, data_root_abs, catalog, split_of, quarantine, fractions, seed, cfg)
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "manifests").mkdir(parents=True)
    (stage / "histograms").mkdir()
    counts: dict[str, Any] = {}
    bal_record: dict[str, Any] = {}
    histograms: list[str] = []
    bal_seed = int(bal_cfg.get("seed", 0))
    for model in MODELS:
        df = pd.DataFrame(frames[model], columns=_columns(model))
        df["repeat"], df["weight"] = 1, 1.0
        labels = [lab for lab in ((bal_cfg.get("models") or {}).get(model) or {"category": None})]
        bal_record[model] = {}
        for lab in labels:
            spec = balancing_for(model, lab, bal_cfg)
            if lab not in df.columns:
                bal_record[model][lab] = {**spec, "applied": False, "why": f"no {lab!r} column"}
                continue
            before = class_counts(df, lab)
            balanced = balance(df, lab, spec, seed=bal_seed)
            # Several labels of one model: keep the largest repeat and multiply the weights.
            df["repeat"] = df["repeat"].combine(balanced["repeat"], max)
            df["weight"] = df["weight"] * balanced["weight"]
            after = class_counts(df, lab, weighted=spec.get("strategy") == "weights")
            png = stage / "histograms" / f"{model}_{lab}.png"
            if len(before):
                histogram_png(before, after, png, f"{model} / {lab}: {spec.get('strategy')} (train split)")
                histograms.append(f"histograms/{png.name}")
            bal_record[model][lab] = {
                **spec,
                "applied": True,
                "before": {str(k): float(v) for k, v in before.items()},
                "after": {str(k): float(v) for k, v in after.items()},
            }
        df["repeat"] = df["repeat"].astype(int)
        df["weight"] = df["weight"].astype(float)
        validate_manifest_frame(df, model)
        df.to_parquet(stage / "manifests" / f"{model}.parquet", index=False)
        counts[model] = {sp: int((df["split"] == sp).sum()) for sp in SPLITS}
        counts[model]["train_draws"] = int(df.loc[df["split"] == "train", "repeat"].sum())
    catalog.assign(
        split=catalog["product_id"].map(split_of),
        image=catalog["product_id"].map(_primary_images(images, snapshot, data_root_abs)),
    ).to_parquet(stage / "catalog.parquet", index=False)
    quarantine.to_parquet(stage / "quarantine.parquet", index=False)
    meta = {
        "format": 1,
        "id": ts_id,
        "snapshot_id": _snapshot_id(snapshot, s),
        "snapshot": str(snapshot),
        "annotations_id": report.get("annotations_sha256"),
        "annotations": str(ann_dir) if ann_dir else None,
        "data_root": os.path.relpath(data_root_abs, out.resolve().parent / out.name),
        "counts": counts,
        "catalog": len(catalog),
        "quarantine": len(quarantine),
        "quarantine_by_reason": report.get("quarantine_by_reason"),
        "balancing": bal_record,
        "splits": {"fractions": fractions, "seed": seed, "by": "product + near-duplicate group"},
        "validation": {
            "run": report["run"],
            "status": report["status"],
            "report": report.get("report_url"),
            "warnings": report.get("warnings_failed"),
        },
        "histograms": histograms,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (stage / "training_set.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage, out)
    _publish_histograms(out, Path(run_dir), histograms, s)
    return out


def _snapshot_id(snapshot: Path, s: Settings) -> str:
    """``<data.dvc md5>:<path in data/>`` for a snapshot in the data tree, else its path."""
    try:
        rel = snapshot.resolve().relative_to(Path(s.data_dir).resolve())
    except ValueError:
        return str(snapshot)
    from pipelines import versioning

    try:
        return f"{versioning.data_hash(s)}:{rel}"
    except (OSError, KeyError):
        return str(rel)


def _source_of(mall: str, cfg: dict[str, Any]) -> str:
    return "photos" if source_of(mall, cfg) == "photos" else mall


def _primary_images(images: pd.DataFrame, snapshot: Path, root: Path) -> dict[str, str]:
    """product -> its first shop shot (by position), relative to the training set's data root:
    the image the search index embeds for it (:func:`pipelines.index.embed.catalog_images`)."""
    df = images.copy()
    df["_worn"] = (df["role"] != "shop").astype(int) if "role" in df.columns else 0
    order = ["product_id", "_worn"] + (["position"] if "position" in df.columns else [])
    first = df.sort_values(order, kind="stable").drop_duplicates("product_id")
    return {
        r.product_id: os.path.relpath(snapshot.resolve() / "images" / r.sha256[:2] / f"{r.sha256}.{r.ext}", root)
        for r in first.itertuples(index=False)
    }


def _snapshot_rows(
    catalog: pd.DataFrame,
    images: pd.DataFrame,
    split_of: dict[str, str],
    snapshot: Path,
    root: Path,
    cfg: dict[str, Any],
) -> dict[str, list[dict]]:
    """Tagger and embedder rows: one per curated product shot (whole-image crops).

    ``category`` is the catalog's taxonomy category and ``label`` the mall's own label. A
    real photo (source ``photos``) knows only its category: its attributes are the values
    the category implies (:data:`models.taxonomy.IMPLIED`, a longsleeve has long sleeves),
    the others None (masked in training); it has no identity for metric learning.
    """
    from models.taxonomy import IMPLIED

    attrs_of = {
        pid: json.loads(a) if isinstance(a, str) and a else {}
        for pid, a in zip(catalog["product_id"], catalog.get("attributes", [None] * len(catalog)), strict=True)
    }
    cat_of = dict(zip(catalog["product_id"], catalog["category"], strict=True))
    label_of = dict(
        zip(catalog["product_id"], catalog["label"] if "label" in catalog.columns else catalog["category"], strict=True)
    )
    mall_of = dict(zip(catalog["product_id"], catalog["mall"], strict=True))
    # The product's identity for metric learning is its SKU where the listing has one: the
    # same article listed by several malls, and the annotation export's street and model
    # crops of it (keyed by the same id), must be one class, or consumer-to-shop pairs never
    # meet in training and street queries never find their shop shot in evaluation.
    sku_of = dict(zip(catalog["product_id"], catalog["sku"], strict=True)) if "sku" in catalog.columns else {}
    names = _attribute_names()
    frames: dict[str, list[dict]] = {m: [] for m in MODELS}
    for r in images.itertuples(index=False):
        pid = r.product_id
        if getattr(r, "role", "shop") not in ("shop", None):
            # A worn shot without a garment box shows the whole outfit, while the listing's
            # labels describe one garment of it: as a crop it teaches the tagger the wrong
            # sleeves and necklines. Worn crops come from annotation imports, with boxes.
            continue
        rel = os.path.relpath(snapshot.resolve() / "images" / r.sha256[:2] / f"{r.sha256}.{r.ext}", root)
        source = _source_of(mall_of[pid], cfg)
        base = {
            "image": rel,
            "split": split_of[pid],
            "source": source,
            "bbox": None,
            "category": cat_of[pid],
            "label": label_of[pid],
        }
        attrs = attrs_of.get(pid, {}) if source != "photos" else IMPLIED.get(cat_of[pid], {})
        # Real photos only know their category: no identity for metric learning.
        sku = sku_of.get(pid)
        identity = (str(sku) if isinstance(sku, str) and sku else pid) if source != "photos" else None
        # the tagger keeps the identity too: its evaluation counts each product once
        frames["tagger"].append({**base, "identity": identity, **{k: attrs.get(k) for k in names}})
        frames["embedder"].append({**base, "identity": identity, "role": r.role})
    return frames


def _add_product_shot_boxes(frames: dict[str, list[dict]], root: Path, spec: dict[str, Any], seed: int) -> None:
    """Detector rows for product shots: one box per shot, where the garment stands out from
    the shot's plain background (:func:`pipelines.ingest.photos.derive_box`).

    A detector that has only seen street scenes cuts a product photo into spurious parts
    (a sleeve, a collar), and the search service then tags and embeds a fragment. Measured
    on the demo's val real photos (the top box cropped, tagged and searched): category
    accuracy 0.60 -> 0.79 and same-category precision@5 0.61 -> 0.82 with these rows.
    ``spec``: ``per_split`` caps the shots per split (a seeded sample over real photos and
    shop shots together: the demo catalog holds ~4,000, and every row costs detector
    epochs). Rows keep each shot's product split, so no test product is trained on.
    """
    import random

    from PIL import Image

    from pipelines.ingest.photos import derive_box

    if not spec or not spec.get("enabled", True):
        return
    caps = spec.get("per_split") or {}
    by_split: dict[str, list[dict]] = {}
    for r in frames["tagger"]:
        if r.get("bbox") is None and r.get("category"):
            by_split.setdefault(r["split"], []).append(r)
    rng = random.Random(seed)
    for split, rows in sorted(by_split.items()):
        rows = sorted(rows, key=lambda r: r["image"])
        rows = rng.sample(rows, min(int(caps.get(split, len(rows))), len(rows)))
        for r in rows:
            try:
                with Image.open(root / r["image"]) as im:
                    W, H = im.size
                    im.draft("RGB", (max(1, W // 4), max(1, H // 4)))  # JPEG DCT-domain downscale
                    box, _ = derive_box(im)
                    sx, sy = W / im.size[0], H / im.size[1]
            except (OSError, ValueError):
                continue  # an unreadable shot is already in the image checks' quarantine
            bbox = [round(box[0] * sx, 1), round(box[1] * sy, 1), round(box[2] * sx, 1), round(box[3] * sy, 1)]
            frames["detector"].append(
                {
                    "image": r["image"],
                    "split": split,
                    "source": r["source"],
                    "width": W,
                    "height": H,
                    "label": r.get("label"),
                    "boxes": json.dumps([{"bbox": bbox, "category": r["category"]}]),
                }
            )


def _add_import_rows(
    frames: dict[str, list[dict]],
    ann_dir: Path,
    root: Path,
    catalog: pd.DataFrame,
    split_of: dict[str, str],
    quarantine: pd.DataFrame,
    fractions: dict[str, float],
    seed: int,
    cfg: dict[str, Any],
) -> None:
    """Append an annotation import's rows, split by what each model is evaluated on.

    - detector and parser rows are whole images, scored on held-out *images*: each image
      gets its own split (a seeded hash of its bytes, at the configured fractions);
    - tagger and embedder rows are crops of one product, scored on held-out *products*:
      each crop takes its product's split, the one the crawled catalog gave it, so a test
      product's street crops and its shop shot are never seen in training.

    Giving a scene the strictest split of every product in it (the rule before) sent most
    multi-figure scenes to test: 42/26/32 % of the demo's images instead of 80/10/10, and
    the detector trained on a third of the boxes it was tested on.
    """
    from pipelines.validate.annotations import import_rows

    bad = {int(k) for k in quarantine.loc[quarantine["table"] == "annotations", "key"]}
    rows = import_rows(ann_dir, bad, float(cfg.get("crops", {}).get("min_visible_fraction", 0.5)))
    # World product id (the demo malls' sku) -> split of the crawled product.
    world_split: dict[str, str] = {}
    if "sku" in catalog.columns:
        for pid, sku, mall in zip(catalog["product_id"], catalog["sku"], catalog["mall"], strict=True):
            if sku and source_of(str(mall), cfg) != "photos":
                world_split.setdefault(str(sku), split_of[pid])
    unknown = sorted({p for rs in rows.values() for r in rs for p in r["products"] if p and p not in world_split})
    if unknown:
        world_split.update(assign_splits({p: p for p in unknown}, {}, fractions, seed))
    images = sorted({r["sha256"] for m in ("detector", "parser") for r in rows.get(m, [])})
    image_split = assign_splits({h: h for h in images}, {}, fractions, seed)
    for model, rs in rows.items():
        for r in rs:
            if model in ("detector", "parser"):
                split = image_split[r["sha256"]]
            else:
                # a crop without a known product falls back to the strictest split of its image
                splits = [world_split[p] for p in r["products"] if p in world_split]
                split = world_split.get(r.get("identity")) or (
                    max(splits, key=_RANK.__getitem__) if splits else "train"
                )
            row = {k: v for k, v in r.items() if k not in ("products", "sha256")}
            row["image"] = os.path.relpath(ann_dir.resolve() / r["image"], root)
            if "label_png" in row:
                row["label_png"] = os.path.relpath(ann_dir.resolve() / r["label_png"], root)
            frames[model].append({**row, "split": split, "source": "synthetic"})


def _publish_histograms(ts: Path, run_dir: Path, histograms: list[str], s: Settings) -> None:
    """Copy the histograms into the Data Docs site and record them in the run's report."""
    from pipelines.validate.report import build_summary

    report_file = run_dir / "report.json"
    report = json.loads(report_file.read_text())
    dest = site_dir(s) / "tailor" / "img" / report["run"]
    dest.mkdir(parents=True, exist_ok=True)
    pub = []
    for h in histograms:
        shutil.copyfile(ts / h, dest / Path(h).name)
        pub.append(f"img/{report['run']}/{Path(h).name}")
    report["training_set"] = str(ts)
    report["histograms"] = pub
    report_file.write_text(json.dumps(report, indent=1, default=str))
    build_summary(s)


def version_training_set(ts: Path, push: bool = True, s: Settings | None = None) -> dict[str, Any]:
    """DVC-commit the data tree when ``ts`` lies in it; return ``{"path", "data_version"}``."""
    s = s or get_settings()
    ts = Path(ts).resolve()
    version = None
    try:
        ts.relative_to(Path(s.data_dir).resolve())
        from pipelines import versioning

        version = versioning.commit_data(push=push, s=s)
    except ValueError:
        pass
    return {"path": str(ts), "data_version": version}


def latest_training_set(s: Settings | None = None) -> Path:
    """The newest training set under ``data/training-sets`` (by its recorded creation time)."""
    s = s or get_settings()
    root = s.training_sets_dir
    candidates = []
    for meta_file in root.glob("*/training_set.json"):
        meta = json.loads(meta_file.read_text())
        # training sets record "created_at" (UTC, ISO 8601: sorts as text); the file's mtime
        # only breaks ties within a second: a copy or a touch must not make an old set "newest"
        created = str(meta.get("created_at") or meta.get("created") or "")
        candidates.append((created, meta_file.stat().st_mtime, meta_file.parent))
    if not candidates:
        raise FileNotFoundError(
            f"no training set under {root}; run the validate_catalog DAG or `tailor validate` first"
        )
    return max(candidates)[2]
