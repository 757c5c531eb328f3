"""The photo mall: a JSON-LD shop built from a folder of real photos and a labels CSV.

One product per photo, category = the CSV label served as-is (``Not sure``, ``Skip`` and
``Other`` included: catching them is validation's job). Photos are served from where
they lie; nothing is copied.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pipelines.malls.faults import FaultConfig, stable_hash
from pipelines.malls.site import ImageRef, Listing, Mall

_BRANDS = (
    "Northwind",
    "Atelier Nova",
    "Blue Fern",
    "Kestrel",
    "Maison Ode",
    "Urban Loom",
    "Verdant",
    "Solstice",
    "Harbor & Pine",
    "Lumen",
)
_ADJECTIVES = (
    "Classic",
    "Everyday",
    "Relaxed",
    "Essential",
    "Vintage",
    "Modern",
    "Soft",
    "Signature",
    "Light",
    "Tailored",
)


def _images_dir(photos_dir: Path) -> Path:
    """``<dir>/images`` when present (the dataset layout), else ``<dir>`` itself."""
    sub = photos_dir / "images"
    return sub if sub.is_dir() else photos_dir


#: share of the photos the demo's photo mall never serves: real garment photos that are in no
#: catalog, index or training split, for checking the deployed endpoint (``tailor bench photos``)
HOLDOUT_SHARE = 0.05


def is_held_out(image_id: str, seed: int = 0, share: float = HOLDOUT_SHARE) -> bool:
    """Whether the photo ``image_id`` is held out of the photo mall (a seeded hash of its id)."""
    return share > 0 and stable_hash(seed, "holdout", Path(image_id).stem) < share


def held_out_photos(
    photos_dir: Path,
    labels_csv: Path | None = None,
    seed: int = 0,
    share: float = HOLDOUT_SHARE,
    image_col: str = "image",
    label_col: str = "label",
    ext: str = ".jpg",
) -> list[tuple[Path, str]]:
    """``(file, label)`` of the photos :func:`build_photo_mall` leaves out with ``holdout=share``."""
    photos_dir = Path(photos_dir)
    img_dir = _images_dir(photos_dir)
    out = []
    for row in read_labels(Path(labels_csv) if labels_csv else photos_dir / "labels.csv", image_col, label_col):
        image_id = row[image_col].strip()
        file = img_dir / (image_id if Path(image_id).suffix else f"{image_id}{ext}")
        if file.is_file() and is_held_out(image_id, seed, share):
            out.append((file, row[label_col]))
    return out


def read_labels(
    labels_csv: Path, image_col: str = "image", label_col: str = "label", limit: int | None = None
) -> list[dict[str, str]]:
    """Rows of the labels CSV in file order (first ``limit`` rows if given)."""
    with Path(labels_csv).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {image_col, label_col} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{labels_csv}: missing columns {sorted(missing)}")
        rows = []
        for row in reader:
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def build_photo_mall(
    photos_dir: Path,
    labels_csv: Path | None = None,
    name: str = "photos",
    image_col: str = "image",
    label_col: str = "label",
    *,
    seed: int = 0,
    limit: int | None = None,
    faults: FaultConfig | None = None,
    ext: str = ".jpg",
    holdout: float = 0.0,
    **mall_kwargs: Any,
) -> Mall:
    """A JSON-LD mall with one product per photo in ``photos_dir``.

    ``labels_csv`` defaults to ``photos_dir/labels.csv``. Title, brand and price are
    deterministic functions of the image id; other CSV columns become attributes.
    Rows whose photo file is missing are skipped. ``limit`` serves only the first N rows.
    ``holdout`` > 0 leaves that share of the photos out (:func:`is_held_out`).
    """
    photos_dir = Path(photos_dir)
    labels_csv = Path(labels_csv) if labels_csv is not None else photos_dir / "labels.csv"
    img_dir = _images_dir(photos_dir)
    listings: list[Listing] = []
    for row in read_labels(labels_csv, image_col, label_col, limit):
        image_id = row[image_col].strip()
        file = img_dir / image_id
        if not file.suffix:
            file = img_dir / f"{image_id}{ext}"
        if not file.is_file() or is_held_out(image_id, seed, holdout):
            continue
        label = row[label_col]
        h = stable_hash(seed, "photo", image_id)
        brand = _BRANDS[int(h * len(_BRANDS))]
        adjective = _ADJECTIVES[int(stable_hash(seed, "adj", image_id) * len(_ADJECTIVES))]
        price = round(9.99 + int(h * 1000) / 10, 2)
        attributes = {k: v for k, v in row.items() if k not in (image_col, label_col) and k and v}
        listings.append(
            Listing(
                pid=Path(image_id).stem,
                category=label,
                title=f"{adjective} {label} {image_id[:8]}",
                brand=brand,
                price=price,
                currency="EUR",
                description=f"{adjective} {label.lower()} by {brand}.",
                attributes=attributes,
                images=[ImageRef(file.name, file, "shop")],
            )
        )
    return Mall(name, "jsonld", listings, seed=seed, faults=faults, **mall_kwargs)
