"""What the synthetic world needs to draw and annotate garments.

The product taxonomy (the categories the catalog stores, the validator checks and the API
returns, and the attribute vocabularies) is :mod:`models.taxonomy`; this module keeps only
what drawing needs: the world's 11 categories, RGB colours, which values a category may
take (:data:`ALLOWED`), label-noise groups and the parsing classes and palette. The
world's categories map onto the product taxonomy by :data:`models.taxonomy.SYNTHETIC_TO_CATEGORY`
(the identity: every synthetic category is a taxonomy category of the same name), and the
attribute vocabularies are the taxonomy's (:data:`models.taxonomy.ATTRIBUTES`).

Categories are ordered: COCO category id = position + 1, parsing class = position + 3
(0 background, 1 skin, 2 hair). Attributes that do not apply to a category are absent
from a product's attribute dict, never ``"n/a"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models.taxonomy import ATTRIBUTES as _PRODUCT_ATTRIBUTES
from models.taxonomy import SUPERCATEGORY as _PRODUCT_SUPERCATEGORY
from models.taxonomy import SYNTHETIC_TO_CATEGORY

CATEGORIES: tuple[str, ...] = (
    "t-shirt",
    "shirt",
    "sweater",
    "outerwear",
    "dress",
    "skirt",
    "pants",
    "shorts",
    "shoes",
    "bag",
    "hat",
)

# The world's categories are product-taxonomy categories of the same name (identity map).
assert all(SYNTHETIC_TO_CATEGORY.get(c) == c for c in CATEGORIES) and len(SYNTHETIC_TO_CATEGORY) == len(CATEGORIES)

SUPERCATEGORY: dict[str, str] = {c: _PRODUCT_SUPERCATEGORY[SYNTHETIC_TO_CATEGORY[c]] for c in CATEGORIES}

COLORS: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30),
    "white": (238, 238, 234),
    "grey": (128, 128, 132),
    "navy": (30, 40, 92),
    "blue": (52, 108, 196),
    "red": (190, 34, 40),
    "green": (46, 128, 64),
    "yellow": (232, 196, 40),
    "pink": (236, 140, 170),
    "purple": (112, 56, 140),
    "brown": (110, 70, 40),
    "beige": (214, 196, 160),
    "orange": (232, 118, 32),
    "khaki": (140, 136, 88),
}

#: attribute vocabularies: the product taxonomy's (same values, same order)
ATTRIBUTES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _PRODUCT_ATTRIBUTES.items()}
# Every colour name has an RGB value to draw it with, in the vocabulary's order.
assert tuple(COLORS) == ATTRIBUTES["color"], "COLORS must list exactly the taxonomy's colours"

PATTERNS: tuple[str, ...] = ATTRIBUTES["pattern"]
SLEEVES: tuple[str, ...] = ATTRIBUTES["sleeve"]
NECKLINES: tuple[str, ...] = ATTRIBUTES["neckline"]
LENGTHS: tuple[str, ...] = ATTRIBUTES["length"]

_TOPS = ("t-shirt", "shirt", "sweater")

# Which values a category can really take (generation draws from these; the vocabulary of
# an attribute is still the full tuple above so a classifier head has one fixed size).
ALLOWED: dict[str, dict[str, tuple[str, ...]]] = {
    "t-shirt": {"sleeve": ("sleeveless", "short", "long"), "neckline": ("crew", "v-neck")},
    "shirt": {"sleeve": ("short", "long"), "neckline": ("collar",)},
    "sweater": {"sleeve": ("long",), "neckline": ("crew", "v-neck", "hooded")},
    "outerwear": {
        "sleeve": ("sleeveless", "long"),
        "neckline": ("collar", "hooded", "crew"),
        "length": ("short", "knee", "long"),
    },
    "dress": {
        "sleeve": ("sleeveless", "short", "long"),
        "neckline": ("crew", "v-neck", "collar"),
        "length": ("short", "knee", "long"),
    },
    "skirt": {"length": ("short", "knee", "long")},
    "pants": {"length": ("knee", "long")},
    "shorts": {"length": ("short", "knee")},
    "shoes": {},
    "bag": {},
    "hat": {},
}

#: attribute names that apply to each category (color and pattern apply to all).
APPLICABLE: dict[str, tuple[str, ...]] = {c: ("color", "pattern", *ALLOWED[c].keys()) for c in CATEGORIES}

#: categories sharing an applicable-attribute set; category label noise flips inside a
#: group so a noisy listing still has a well-formed attribute dict.
NOISE_GROUPS: tuple[tuple[str, ...], ...] = (
    _TOPS,
    ("outerwear", "dress"),
    ("skirt", "pants", "shorts"),
    ("shoes", "bag", "hat"),
)

PARSING_CLASSES: tuple[str, ...] = ("background", "skin", "hair", *CATEGORIES)

PARSING_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 200, 160),
    (120, 60, 20),
    (230, 60, 60),
    (60, 160, 230),
    (240, 160, 40),
    (140, 80, 200),
    (230, 80, 180),
    (60, 200, 120),
    (40, 80, 200),
    (200, 220, 60),
    (120, 120, 120),
    (160, 110, 60),
    (250, 240, 120),
)


@dataclass(frozen=True)
class Taxonomy:
    """All label vocabularies in one object; :meth:`to_dict` is what world.json stores."""

    categories: tuple[str, ...] = CATEGORIES
    supercategory: dict[str, str] = field(default_factory=lambda: dict(SUPERCATEGORY))
    attributes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(ATTRIBUTES))
    applicable: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(APPLICABLE))
    allowed: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=lambda: dict(ALLOWED))
    colors: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(COLORS))
    parsing_classes: tuple[str, ...] = PARSING_CLASSES
    parsing_palette: tuple[tuple[int, int, int], ...] = PARSING_PALETTE

    def category_id(self, name: str) -> int:
        """COCO category id (1-based, taxonomy order)."""
        return self.categories.index(name) + 1

    def parsing_class(self, name: str) -> int:
        """Parsing label of a garment category (3 + its index)."""
        return self.categories.index(name) + 3

    def coco_categories(self) -> list[dict[str, Any]]:
        """The ``categories`` list of a COCO file."""
        return [{"id": i + 1, "name": c, "supercategory": self.supercategory[c]} for i, c in enumerate(self.categories)]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (lists instead of tuples)."""
        return {
            "categories": list(self.categories),
            "supercategory": dict(self.supercategory),
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            "applicable": {k: list(v) for k, v in self.applicable.items()},
            "allowed": {c: {a: list(v) for a, v in d.items()} for c, d in self.allowed.items()},
            "colors": {k: list(v) for k, v in self.colors.items()},
            "parsing_classes": list(self.parsing_classes),
            "parsing_palette": [list(c) for c in self.parsing_palette],
        }


TAXONOMY = Taxonomy()
