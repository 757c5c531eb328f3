"""The one product taxonomy: the categories the catalog stores, the tagger predicts, the
validator checks and the service returns, with the attribute vocabularies.

It covers real malls' labels (the ``clothing-photos`` dataset's T-Shirt, Longsleeve, Polo,
Hoodie, Blazer, Blouse ...) and the synthetic world, whose categories map onto it
(:data:`SYNTHETIC_TO_CATEGORY`). A mall's own label goes through :func:`to_category`;
labels that are not garments (``Not sure``, ``Skip``, ``Other``) map to ``None`` and are
quarantined by validation.

This module is plain data: no torch, no generator. The synthetic world keeps what only
drawing needs (RGB values, which sleeve a skirt may have) in ``pipelines.synth.taxonomy``.
"""

from __future__ import annotations

#: product categories, grouped by supercategory. The order is the tagger's category-head order.
SUPERCATEGORY: dict[str, str] = {
    "t-shirt": "top",
    "longsleeve": "top",
    "polo": "top",
    "shirt": "top",
    "blouse": "top",
    "top": "top",
    "undershirt": "top",
    "body": "top",
    "sweater": "top",
    "hoodie": "top",
    "outerwear": "outer",
    "blazer": "outer",
    "dress": "full-body",
    "skirt": "bottom",
    "pants": "bottom",
    "shorts": "bottom",
    "shoes": "footwear",
    "bag": "accessory",
    "hat": "accessory",
}
CATEGORIES: tuple[str, ...] = tuple(SUPERCATEGORY)

#: attribute vocabularies (a head of the tagger each; unknown values are masked, not guessed)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": (
        "black",
        "white",
        "grey",
        "navy",
        "blue",
        "red",
        "green",
        "yellow",
        "pink",
        "purple",
        "brown",
        "beige",
        "orange",
        "khaki",
    ),
    "pattern": ("solid", "stripes", "checks", "dots", "print", "floral", "camo"),
    "sleeve": ("sleeveless", "short", "long"),
    "neckline": ("crew", "v-neck", "collar", "hooded"),
    "length": ("short", "knee", "long"),
}

_TOP_ATTRS = ("color", "pattern", "sleeve", "neckline")
#: attributes that apply to each category (the service reports only these)
APPLICABLE: dict[str, tuple[str, ...]] = {
    **{
        c: _TOP_ATTRS
        for c in ("t-shirt", "longsleeve", "polo", "shirt", "blouse", "top", "undershirt", "body", "sweater", "hoodie")
    },
    "outerwear": (*_TOP_ATTRS, "length"),
    "blazer": (*_TOP_ATTRS, "length"),
    "dress": (*_TOP_ATTRS, "length"),
    "skirt": ("color", "pattern", "length"),
    "pants": ("color", "pattern", "length"),
    "shorts": ("color", "pattern", "length"),
    "shoes": ("color", "pattern"),
    "bag": ("color", "pattern"),
    "hat": ("color", "pattern"),
}

#: attribute values a category implies whatever the photo shows (a longsleeve has long sleeves)
IMPLIED: dict[str, dict[str, str]] = {
    "t-shirt": {"sleeve": "short"},
    "longsleeve": {"sleeve": "long"},
    "polo": {"sleeve": "short", "neckline": "collar"},
    "hoodie": {"sleeve": "long", "neckline": "hooded"},
}

#: labels malls use that are not garment categories: known, never trained on
NON_GARMENT: tuple[str, ...] = ("Not sure", "Skip", "Other")

#: real-mall labels (the ``clothing-photos`` vocabulary) -> taxonomy category
REAL_TO_CATEGORY: dict[str, str] = {
    "T-Shirt": "t-shirt",
    "Longsleeve": "longsleeve",
    "Polo": "polo",
    "Shirt": "shirt",
    "Blouse": "blouse",
    "Top": "top",
    "Undershirt": "undershirt",
    "Body": "body",
    "Hoodie": "hoodie",
    "Outwear": "outerwear",
    "Blazer": "blazer",
    "Dress": "dress",
    "Skirt": "skirt",
    "Pants": "pants",
    "Shorts": "shorts",
    "Shoes": "shoes",
    "Hat": "hat",
}

#: the synthetic world's categories -> taxonomy category (the world draws a subset of it)
SYNTHETIC_TO_CATEGORY: dict[str, str] = {
    "t-shirt": "t-shirt",
    "shirt": "shirt",
    "sweater": "sweater",
    "outerwear": "outerwear",
    "dress": "dress",
    "skirt": "skirt",
    "pants": "pants",
    "shorts": "shorts",
    "shoes": "shoes",
    "bag": "bag",
    "hat": "hat",
}

#: per-pixel classes of the human parser: background, skin, hair and the garment categories
#: that parsing annotations exist for (the synthetic world's, in its label-PNG order)
PARSING_CLASSES: tuple[str, ...] = ("background", "skin", "hair", *SYNTHETIC_TO_CATEGORY.values())

#: the 10 most frequent real labels as categories: "category accuracy over the 10 main
#: labels" (the platform's real-photo target) is measured on photos of these
MAIN_CATEGORIES: tuple[str, ...] = (
    "t-shirt",
    "longsleeve",
    "pants",
    "shoes",
    "shirt",
    "dress",
    "outerwear",
    "shorts",
    "hat",
    "skirt",
)


def to_category(label: object) -> str | None:
    """The taxonomy category of a mall label: itself when it already is one (any case),
    the mapped one for a known real-mall label, ``None`` for non-garment or unknown labels."""
    if not isinstance(label, str) or not label.strip():
        return None
    text = label.strip()
    if text in REAL_TO_CATEGORY:
        return REAL_TO_CATEGORY[text]
    low = text.lower()
    if low in SUPERCATEGORY:
        return low
    by_lower = {k.lower(): v for k, v in REAL_TO_CATEGORY.items()}
    return by_lower.get(low)


def category_index(name: str) -> int:
    """Position of a category in :data:`CATEGORIES`; raises KeyError naming the known ones."""
    try:
        return CATEGORIES.index(name)
    except ValueError:
        raise KeyError(f"{name!r} is not a taxonomy category; known: {', '.join(CATEGORIES)}") from None


def to_dict() -> dict[str, object]:
    """A JSON-ready view (what a bundle or an API answer can carry)."""
    return {
        "categories": list(CATEGORIES),
        "supercategory": dict(SUPERCATEGORY),
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
        "applicable": {k: list(v) for k, v in APPLICABLE.items()},
        "main": list(MAIN_CATEGORIES),
    }
