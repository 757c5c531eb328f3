"""``tailor bench look``: how well "complete the look" tells owned garments from missing ones.

Ground truth comes from the synthetic world's consumer-to-shop pairs: street scenes whose
garments are annotated with the product they show (embedder manifest, ``role == street``).
For one split, a seeded half of the products in those scenes is "owned": its shop photo
goes into a closet exactly as ``POST /closet/items`` would put it there
(:meth:`bentos.engine.SearchEngine.describe`). Each scene then runs through the look's own
analysis (:meth:`~bentos.engine.SearchEngine.analyze`); a detected garment that overlaps an
annotated one (IoU >= 0.5) is scored by its best cosine similarity with a closet item of
the same predicted category, as :func:`bentos.shopper.complete_the_look` does. An owned
product should come back ``covered``, any other ``missing``.

It prints, per threshold, the share of owned garments covered and of other garments
missing, and the balanced accuracy next to the trivial baselines (all covered / all
missing: 0.5). Pick ``look.covered_min`` on the validation split; report the test split.

It lives with the service because it runs the service's own engine; the ``tailor`` CLI
finds the command through the ``tailor.bench`` entry point (pyproject.toml), so pipelines
never import serving code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def look_scores(
    bundle: Path, training_set: Path, split: str = "val", seed: int = 0, max_scenes: int = 150
) -> dict[str, Any]:
    """Per matched street garment: ``(best same-category similarity or None, owned)``."""
    import pandas as pd
    import torch
    from PIL import Image

    from bentos.engine import Bundle, SearchEngine
    from pipelines.manifests import read_training_set

    torch.set_num_threads(2)
    root = Path(read_training_set(training_set)["data_root_abs"])
    man = pd.read_parquet(Path(training_set) / "manifests" / "embedder.parquet")
    man = man[man["split"] == split]
    street = man[(man["role"] == "street") & man["bbox"].notna() & man["identity"].notna()]
    scenes = sorted(street["image"].unique())
    rng = np.random.default_rng(seed)
    scenes = [scenes[i] for i in sorted(rng.choice(len(scenes), min(max_scenes, len(scenes)), replace=False))]
    street = street[street["image"].isin(scenes)]
    ids = sorted(street["identity"].unique())
    owned = set(rng.choice(ids, len(ids) // 2, replace=False).tolist())
    shop = man[(man["role"] == "shop") & man["identity"].isin(owned)].drop_duplicates("identity")
    engine = SearchEngine(Bundle.load(bundle), exact_photo_min=0.0)
    closet: dict[str, list[np.ndarray]] = {}
    for path in shop["image"]:
        with Image.open(root / path) as im:
            d = engine.describe(im.convert("RGB"))
        closet.setdefault(d["category"], []).append(d["embedding"])
    vecs = {c: np.stack(v) for c, v in closet.items()}
    rows: list[tuple[float | None, bool]] = []
    for scene, gt in street.groupby("image"):
        with Image.open(root / scene) as im:
            a = engine.analyze(im.convert("RGB"))
        for _, g in gt.iterrows():
            bbox = g["bbox"]
            x, y, w, h = json.loads(bbox) if isinstance(bbox, str) else bbox  # COCO [x, y, w, h]
            box = [x, y, x + w, y + h]
            best = max(range(len(a["garments"])), key=lambda j: _iou(a["garments"][j]["box"], box))
            if _iou(a["garments"][best]["box"], box) < 0.5:
                continue  # the detector missed it: not a look decision
            cat = a["garments"][best]["category"]
            sim = float((vecs[cat] @ a["embeddings"][best]).max()) if cat in vecs else None
            rows.append((sim, g["identity"] in owned))
    return {
        "rows": rows,
        "scenes": len(scenes),
        "owned": len(owned),
        "products": len(ids),
        "annotated": int(len(street)),
    }


def threshold_table(rows: list[tuple[float | None, bool]], grid: list[float]) -> list[dict[str, float]]:
    """Per threshold: owned garments covered (TPR), other garments missing (TNR), balanced accuracy."""
    pos = [s for s, o in rows if o]
    neg = [s for s, o in rows if not o]
    out = []
    for t in grid:
        tpr = float(np.mean([s is not None and s >= t for s in pos])) if pos else 0.0
        tnr = float(np.mean([s is None or s < t for s in neg])) if neg else 0.0
        out.append(
            {
                "covered_min": t,
                "owned_covered": round(tpr, 3),
                "other_missing": round(tnr, 3),
                "balanced_accuracy": round((tpr + tnr) / 2, 3),
            }
        )
    return out


def bench_look(bundle: Path, training_set: Path, split: str = "val", echo: Any = print) -> dict[str, Any]:
    """Run :func:`look_scores` and print the threshold table; returns both."""
    res = look_scores(bundle, training_set, split)
    grid = [round(x, 2) for x in np.arange(0.3, 0.96, 0.05)]
    table = threshold_table(res["rows"], grid)
    pos = sum(1 for _, o in res["rows"] if o)
    echo(
        f"split {split}: {res['scenes']} street scenes, {res['products']} products ({res['owned']} owned), "
        f"{len(res['rows'])} detected garments ({pos} owned, {len(res['rows']) - pos} not); "
        "baseline (all covered or all missing): balanced accuracy 0.500"
    )
    echo("covered_min  owned->covered  other->missing  balanced")
    for r in table:
        echo(
            f"  {r['covered_min']:.2f}       {r['owned_covered']:.3f}           {r['other_missing']:.3f}          "
            f"{r['balanced_accuracy']:.3f}"
        )
    best = max(table, key=lambda r: r["balanced_accuracy"])
    echo(f"best on {split}: covered_min {best['covered_min']:.2f} balanced accuracy {best['balanced_accuracy']:.3f}")
    return {**{k: v for k, v in res.items() if k != "rows"}, "table": table, "best": best}


def bench_look_command(
    split: Annotated[str, typer.Option(help="val to choose look.covered_min, test to report it")] = "val",
    bundle: Annotated[Path | None, typer.Option(help="bundle directory; default: the live release's")] = None,
    training_set: Annotated[Path | None, typer.Option(help="training-set directory; default: the latest")] = None,
) -> None:
    """Complete-the-look on annotated street scenes: owned garments covered vs others missing per threshold."""
    from pipelines.deploy.release import read_state, release_info
    from pipelines.validate.training_set import latest_training_set

    if bundle is None:
        current = read_state().get("current")
        if not current:
            typer.echo("nothing is deployed; pass --bundle", err=True)
            raise typer.Exit(1)
        bundle = Path(release_info(current)["bundle"])
    bench_look(bundle, Path(training_set or latest_training_set()), split, echo=typer.echo)
