"""Import a synthetic world's annotation export (COCO + parsing PNGs + images) immutably.

Layout of ``data/imports/<name>/``::

    coco.json      the world's COCO; each image gets ``sha256``, ``file_name`` ->
                   ``images/<sha[:2]>/<sha>.<ext>``, ``original_file`` and ``parsing_png``
    images/<sha[:2]>/<sha>.<ext>     referenced images, content-addressed (like a snapshot)
    parsing/<sha[:2]>/<sha>.png      parsing label map of the image with that sha256
    products.jsonl                   the world's product ground truth (identities, attributes)
    import.json                      name, source, counts, content hash

Written to a staging directory and renamed, never modified afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pipelines.settings import Settings, get_settings


def _blob(root: Path, sha: str, ext: str) -> Path:
    return root / sha[:2] / f"{sha}.{ext}"


def import_annotations(world: Path, out: Path, dvc: bool | None = None, s: Settings | None = None) -> Path:
    """Bring ``world``'s COCO export, parsing PNGs and images into ``out``; return ``out``.

    Idempotent: a finished import is returned as is. When ``out`` lies in the data tree it
    is DVC-versioned (``dvc=None`` means "when in the data tree").
    """
    from pipelines.crawl.snapshot import tree_hash

    s = s or get_settings()
    world, out = Path(world), Path(out)
    if not (out / "import.json").exists():
        coco = json.loads((world / "annotations" / "coco.json").read_text())
        stage = out.parent / f".{out.name}.partial"
        if stage.exists():
            shutil.rmtree(stage)
        stage.mkdir(parents=True)
        for im in coco["images"]:
            src = world / im["file_name"]
            data = src.read_bytes() if src.exists() else b""
            sha = hashlib.sha256(data).hexdigest()
            ext = src.suffix.lstrip(".") or "jpg"
            dst = _blob(stage / "images", sha, ext)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            png = world / "parsing" / Path(im["file_name"]).relative_to("images").with_suffix(".png")
            im["original_file"] = im["file_name"]
            im["file_name"] = str(dst.relative_to(stage))
            im["sha256"] = sha
            im["parsing_png"] = None
            im["decodes"] = _decodes(data)
            if png.exists():
                pdst = _blob(stage / "parsing", sha, "png")
                pdst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, pdst)
                im["parsing_png"] = str(pdst.relative_to(stage))
        (stage / "coco.json").write_text(json.dumps(coco, sort_keys=True))
        if (world / "products.jsonl").exists():
            shutil.copyfile(world / "products.jsonl", stage / "products.jsonl")
        wmeta = json.loads((world / "world.json").read_text()) if (world / "world.json").exists() else {}
        meta = {
            "name": out.name,
            "kind": "coco",
            "source": str(world.resolve()),
            "world_config": wmeta.get("config"),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "counts": {"images": len(coco["images"]), "annotations": len(coco["annotations"])},
            "content_sha256": tree_hash(stage),
        }
        (stage / "import.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if out.exists():
            out.rmdir()  # an empty leftover directory only; a non-empty one raises
        os.replace(stage, out)
    if dvc is not False and _inside(out, Path(s.data_dir)):
        from pipelines import versioning

        versioning.commit_data(push=True, s=s)
    return out


def _decodes(data: bytes) -> bool:
    """Whether Pillow can fully decode ``data`` (broken files stay in the raw import)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return True
    except Exception:  # noqa: BLE001 - any decoder error means "broken"
        return False


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def import_rows(
    import_dir: Path, quarantined: set[int] | None = None, min_visible: float = 0.5
) -> dict[str, list[dict[str, Any]]]:
    """Detector, parser and embedder rows of an import (paths relative to ``import_dir``).

    Each row carries ``products`` (the world product ids it shows) so the splitter can keep
    products apart. Quarantined annotations are left out (an image whose every annotation is
    quarantined keeps its remaining ones).

    Garment crops (tagger and embedder rows) come from the worn shots, street scenes and
    model shots alike, and only from garments at least ``min_visible`` visible: the box of
    a sweater under a coat shows the coat, so its crop would teach the coat's colour as the
    sweater's. The detector still learns every box.
    """
    from models.taxonomy import ATTRIBUTES, to_category

    quarantined = quarantined or set()
    coco = json.loads((Path(import_dir) / "coco.json").read_text())
    # the export's categories as product-taxonomy categories (the world's map by identity);
    # one that maps to none is left out like an invalid id
    cats = {c["id"]: cat for c in coco["categories"] if (cat := to_category(c["name"]))}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        if int(a["id"]) not in quarantined and a.get("category_id") in cats:
            by_image.setdefault(a["image_id"], []).append(a)
    rows: dict[str, list[dict[str, Any]]] = {"detector": [], "parser": [], "embedder": [], "tagger": []}
    for im in coco["images"]:
        if not im.get("sha256") or im.get("decodes") is False:
            continue  # broken files are kept in the import but never trained on
        anns = by_image.get(im["id"], [])
        pids = sorted({a.get("product_id") for a in anns if a.get("product_id")})
        base = {
            "image": im["file_name"],
            "width": im["width"],
            "height": im["height"],
            "role": im.get("role"),
            "products": pids,
            "sha256": im["sha256"],
        }
        rows["detector"].append(
            {**base, "boxes": json.dumps([{"bbox": a["bbox"], "category": cats[a["category_id"]]} for a in anns])}
        )
        if im.get("parsing_png"):
            rows["parser"].append({**base, "label_png": im["parsing_png"]})
        if im.get("role") in ("street", "model"):  # worn: the consumer side of consumer-to-shop
            for a in anns:
                if float(a.get("visible_fraction", 1.0)) < min_visible:
                    continue
                attrs = a.get("attributes") or {}
                crop = {
                    **base,
                    "bbox": json.dumps(a["bbox"]),
                    "category": cats[a["category_id"]],
                    "identity": a.get("product_id"),
                    **{k: attrs.get(k) for k in ATTRIBUTES},
                }
                rows["embedder"].append(crop)
                rows["tagger"].append(crop)
    return rows


def latest_annotations(s: Settings | None = None) -> Path | None:
    """The newest finished annotation import under ``data/imports`` (None when there is none).

    Crawled snapshots carry product labels only; boxes and masks come from an imported
    annotation export, so a validation triggered by a new crawl pairs it with the newest one.
    """
    s = s or get_settings()
    imports = [p.parent for p in (s.imports_dir).glob("*/import.json")]
    return max(imports, key=lambda p: (p / "import.json").stat().st_mtime) if imports else None
