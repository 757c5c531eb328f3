"""The one product taxonomy (models.taxonomy): real malls' labels and the synthetic world map
onto it, its vocabularies agree with the generator's, it stands alone (no pipelines import),
and the catalog, validator and API use it rather than the synthetic generator's module."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from models import taxonomy as T
from pipelines.settings import PROJECT_ROOT

LABELS_CSV = PROJECT_ROOT.parent / "shared" / "datasets" / "clothing-photos" / "labels.csv"


def _real_labels() -> set[str]:
    """Every label of the real photos' labels.csv, or the known ones where it is absent."""
    if LABELS_CSV.exists():
        with LABELS_CSV.open(newline="", encoding="utf-8") as fh:
            labels = {row["label"] for row in csv.DictReader(fh)}
        return labels - {"label"}  # the CSV repeats its header once
    return {*T.REAL_TO_CATEGORY, *T.NON_GARMENT}


def test_every_real_label_is_a_category_or_non_garment() -> None:
    labels = _real_labels()
    assert len(labels) >= 17
    for label in labels:
        cat = T.to_category(label)
        assert (cat in T.CATEGORIES) if cat is not None else (label in T.NON_GARMENT), label
    assert {label for label in labels if T.to_category(label) is None} <= set(T.NON_GARMENT)


@pytest.mark.parametrize(
    ("label", "category"),
    [
        ("Longsleeve", "longsleeve"),
        ("Polo", "polo"),
        ("Hoodie", "hoodie"),
        ("Blazer", "blazer"),
        ("Blouse", "blouse"),
        ("T-Shirt", "t-shirt"),
        ("Outwear", "outerwear"),
        ("Top", "top"),
        ("Undershirt", "undershirt"),
        ("Body", "body"),
        ("t-shirt", "t-shirt"),
        (" Dress ", "dress"),
        ("LONGSLEEVE", "longsleeve"),
    ],
)
def test_real_labels_keep_their_own_category(label: str, category: str) -> None:
    assert T.to_category(label) == category


@pytest.mark.parametrize("label", ["Not sure", "Skip", "Other", "spacesuit", "", None, 3])
def test_non_garment_and_unknown_labels_map_to_none(label: object) -> None:
    assert T.to_category(label) is None


def test_taxonomy_is_consistent() -> None:
    assert len(T.CATEGORIES) == 19 and len(set(T.CATEGORIES)) == 19
    assert set(T.APPLICABLE) == set(T.CATEGORIES)
    assert all(set(a) <= set(T.ATTRIBUTES) for a in T.APPLICABLE.values())
    assert set(T.MAIN_CATEGORIES) <= set(T.CATEGORIES) and len(T.MAIN_CATEGORIES) == 10
    for cat, implied in T.IMPLIED.items():
        assert cat in T.CATEGORIES
        for attr, value in implied.items():
            assert attr in T.APPLICABLE[cat] and value in T.ATTRIBUTES[attr], (cat, attr)
    assert set(T.REAL_TO_CATEGORY.values()) <= set(T.CATEGORIES)
    assert not set(T.NON_GARMENT) & set(T.REAL_TO_CATEGORY)
    with pytest.raises(KeyError, match="not a taxonomy category"):
        T.category_index("spacesuit")


def test_every_synthetic_category_maps_onto_the_taxonomy() -> None:
    from pipelines.synth import taxonomy as S

    assert set(T.SYNTHETIC_TO_CATEGORY) == set(S.CATEGORIES)
    for cat in S.CATEGORIES:
        mapped = T.SYNTHETIC_TO_CATEGORY[cat]
        assert mapped == cat and mapped in T.CATEGORIES  # the identity
        assert T.SUPERCATEGORY[mapped] == S.SUPERCATEGORY[cat]
        # what the world draws for a category is what the product taxonomy applies to it
        assert set(S.APPLICABLE[cat]) == set(T.APPLICABLE[mapped]), cat


def test_attribute_vocabularies_of_synth_and_taxonomy_agree() -> None:
    from pipelines.synth import TAXONOMY
    from pipelines.synth import taxonomy as S

    assert S.ATTRIBUTES == T.ATTRIBUTES and list(S.ATTRIBUTES) == list(T.ATTRIBUTES)
    assert dict(TAXONOMY.attributes) == T.ATTRIBUTES
    assert tuple(S.COLORS) == T.ATTRIBUTES["color"]  # every colour has an RGB value to draw it
    for cat, allowed in S.ALLOWED.items():
        for attr, values in allowed.items():
            assert set(values) <= set(T.ATTRIBUTES[attr]), (cat, attr)


def test_taxonomy_imports_nothing_from_pipelines() -> None:
    code = (
        "import sys, models.taxonomy; "
        "bad = sorted(m for m in sys.modules if m == 'pipelines' or m.startswith('pipelines.') "
        "or m.split('.')[0] in ('torch', 'timm', 'pandas')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_lookups_outside_synth_and_training_do_not_import_the_generator() -> None:
    """Catalog, validator, ingest and API take categories from models.taxonomy."""
    places = [
        *sorted((PROJECT_ROOT / "pipelines" / "validate").glob("*.py")),
        *sorted((PROJECT_ROOT / "pipelines" / "ingest").glob("*.py")),
        *sorted((PROJECT_ROOT / "bentos").glob("*.py")),
    ]
    for path in places:
        text = path.read_text()
        assert "synth.taxonomy" not in text and "synth import TAXONOMY" not in text, path


def test_validation_config_resolves_the_taxonomy(tmp_path: Path) -> None:
    from pipelines.validate.config import load_validation_config

    cfg = load_validation_config()
    assert cfg["vocabularies"]["taxonomy"] == list(T.CATEGORIES)
    assert set(cfg["ignored_labels"]) == set(T.NON_GARMENT)
    old = tmp_path / "old.yaml"  # the old spelling still works
    old.write_text(
        (PROJECT_ROOT / "config" / "validation.yaml").read_text().replace("taxonomy: taxonomy", "taxonomy: from_synth")
    )
    assert "from_synth" in old.read_text()
    assert load_validation_config(old)["vocabularies"]["taxonomy"] == list(T.CATEGORIES)


def test_api_category_filter_uses_the_taxonomy() -> None:
    from bentos._io import BadInput, parse_category

    assert parse_category("Longsleeve", T.CATEGORIES) == "longsleeve"
    assert parse_category("blazer", T.CATEGORIES) == "blazer"
    with pytest.raises(BadInput):
        parse_category("spacesuit", T.CATEGORIES)
