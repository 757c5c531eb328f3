"""The GX file project: one suite per table, a validation definition and a checkpoint each.

The expectations are declared here (thresholds from ``config/validation.yaml``) and written
to the GX project under ``settings.expectations_dir`` by :func:`ensure_project`, which only
rewrites a suite whose content changed, so the committed JSON stays stable run after run.
Each expectation carries ``meta``: ``name`` (``<suite>.<name>`` is its id in messages and
config), ``severity`` (``critical`` | ``warning``) and ``quarantine`` (the reason given to
rows that fail it; absent for aggregate or report-only expectations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.validate.tables import KEYS, taxonomy_keys, vocabulary_keys

DATASOURCE = "tailor"
BATCH = "whole"
SUITES = ("products", "images", "labels", "label_classes", "annotations", "snapshot", "malls")
#: GX ``unexpected_index_column_names`` per suite (default: its key column). The malls table
#: names the reason beside the mall, so the Data Docs show why a mall's row failed.
INDEX_COLUMNS = {"malls": ["mall", "reason"]}
URL_REGEX = r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[^\s]*)?$"


@dataclass(frozen=True)
class Spec:
    """One expectation: GX class name, kwargs, name, and the quarantine reason (row-level)."""

    suite: str
    name: str
    type: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    quarantine: str | None = None

    @property
    def id(self) -> str:
        """``<suite>.<name>`` — the id used in config, messages and the quarantine."""
        return f"{self.suite}.{self.name}"


def specs(cfg: dict[str, Any]) -> list[Spec]:
    """Every expectation of every suite, thresholds taken from the validation config."""
    p, i, lab, a, sn = (cfg["products"], cfg["images"], cfg["labels"], cfg["annotations"], cfg["snapshot"])
    ml = cfg.get("malls") or {}
    out = [
        # products: schema and types, required fields, uniqueness, price, currency, taxonomy, URL
        Spec(
            "products",
            "columns",
            "ExpectTableColumnsToMatchSet",
            {"column_set": sorted(p["required"]), "exact_match": False},
        ),
        Spec(
            "products",
            "price_type",
            "ExpectColumnValuesToBeInTypeList",
            {"column": "price", "type_list": ["float64", "float32", "int64", "int32", "Float64", "Int64"]},
        ),
    ]
    out += [
        Spec(
            "products",
            "required_present",
            "ExpectColumnValuesToNotBeNull",
            {"column": c, "mostly": p["mostly_required"]},
            quarantine=f"missing {c}",
        )
        for c in p["required"]
    ]
    out += [
        Spec(
            "products",
            "product_id_unique",
            "ExpectColumnValuesToBeUnique",
            {"column": "product_id"},
            quarantine="duplicate product_id",
        ),
        Spec(
            "products",
            "price_positive",
            "ExpectColumnValuesToBeBetween",
            {"column": "price", "min_value": 0, "strict_min": True, "mostly": p["mostly_price"]},
            quarantine="price not > 0",
        ),
        Spec(
            "products",
            "currency_in_set",
            "ExpectColumnValuesToBeInSet",
            {"column": "currency", "value_set": list(p["currencies"]), "mostly": p["mostly_currency"]},
            quarantine="unknown currency",
        ),
        Spec(
            "products",
            "category_in_taxonomy",
            "ExpectColumnValuesToBeInSet",
            {"column": "taxonomy_category", "value_set": taxonomy_keys(cfg), "mostly": p["mostly_category"]},
            quarantine="category not in taxonomy",
        ),
        Spec(
            "products",
            "url_well_formed",
            "ExpectColumnValuesToMatchRegex",
            {"column": "url", "regex": URL_REGEX, "mostly": p["mostly_url"]},
            quarantine="malformed url",
        ),
        # images: format, size, aspect ratio, exact duplicates, near-duplicate rate
        Spec(
            "images",
            "format_allowed",
            "ExpectColumnValuesToBeInSet",
            {"column": "format", "value_set": list(i["formats"]), "mostly": i["mostly_format"]},
            quarantine="image format not allowed",
        ),
        Spec(
            "images",
            "min_side",
            "ExpectColumnValuesToBeBetween",
            {"column": "min_side", "min_value": i["min_side"], "mostly": i["mostly_min_side"]},
            quarantine=f"image smaller than {i['min_side']} px",
        ),
        Spec(
            "images",
            "aspect_ratio",
            "ExpectColumnValuesToBeBetween",
            {
                "column": "aspect_ratio",
                "min_value": i["aspect_ratio"][0],
                "max_value": i["aspect_ratio"][1],
                "mostly": i["mostly_aspect"],
            },
            quarantine="aspect ratio out of bounds",
        ),
        Spec(
            "images",
            "no_exact_duplicates",
            "ExpectColumnValuesToBeNull",
            {"column": "exact_dup_of"},
            quarantine="exact duplicate image",
        ),
        Spec(
            "images",
            "near_dup_rate",
            "ExpectColumnMeanToBeBetween",
            {"column": "is_near_dup", "min_value": 0, "max_value": i["max_near_dup_rate"]},
        ),
        # labels: vocabulary (Not sure / Skip / Other are caught), examples per class, imbalance
        Spec(
            "labels",
            "label_in_vocabulary",
            "ExpectColumnValuesToBeInSet",
            {"column": "label_key", "value_set": vocabulary_keys(cfg), "mostly": lab["mostly_vocabulary"]},
            quarantine="label not in vocabulary",
        ),
        Spec(
            "label_classes",
            "min_examples",
            "ExpectColumnValuesToBeBetween",
            {"column": "n", "min_value": lab["min_examples"]},
        ),
        Spec(
            "label_classes",
            "imbalance_ratio",
            "ExpectColumnMaxToBeBetween",
            {"column": "imbalance_ratio", "max_value": lab["max_imbalance_ratio"]},
        ),
        # annotations: boxes inside images, non-empty masks, valid category ids
        Spec(
            "annotations",
            "box_inside_image",
            "ExpectColumnValuesToBeInSet",
            {"column": "bbox_inside", "value_set": [True], "mostly": a["mostly_inside"]},
            quarantine="box outside image",
        ),
        Spec(
            "annotations",
            "mask_non_empty",
            "ExpectColumnValuesToBeBetween",
            {"column": "mask_area", "min_value": 1, "mostly": a["mostly_mask"]},
            quarantine="empty mask",
        ),
        Spec(
            "annotations",
            "category_id_valid",
            "ExpectColumnValuesToBeInSet",
            {"column": "category", "value_set": vocabulary_keys(cfg), "mostly": a["mostly_category"]},
            quarantine="invalid category id",
        ),
        # snapshot: row count drop vs the previous snapshot, freshness
        Spec(
            "snapshot",
            "row_drop",
            "ExpectColumnValuesToBeBetween",
            {"column": "row_drop", "min_value": 0, "max_value": sn["max_row_drop"]},
        ),
        Spec(
            "snapshot",
            "freshness",
            "ExpectColumnValuesToBeBetween",
            {"column": "age_hours", "max_value": sn["max_age_hours"]},
        ),
        # malls: one row per mall the crawl was asked for (pipelines/validate/malls.py):
        # products this crawl > 0, and >= ratio x its last good crawl's (no history: skipped)
        Spec("malls", "products_present", "ExpectColumnValuesToBeBetween", {"column": "products", "min_value": 1}),
        Spec(
            "malls",
            "products_vs_last_good",
            "ExpectColumnValuesToBeBetween",
            {"column": "ratio_to_last_good", "min_value": ml.get("min_ratio_to_last_good", 0.5)},
        ),
    ]
    return out


def severity_of(spec_id: str, cfg: dict[str, Any]) -> str:
    """``critical`` or ``warning`` for an expectation id (unknown ids are critical: fail safe)."""
    return (cfg.get("severity") or {}).get(spec_id, "critical")


def _expectation(spec: Spec, cfg: dict[str, Any]):
    import great_expectations as gx

    meta = {"name": spec.name, "severity": severity_of(spec.id, cfg)}
    if spec.quarantine:
        meta["quarantine"] = spec.quarantine
    return getattr(gx.expectations, spec.type)(**spec.kwargs, meta=meta)


def _signature(expectations: list[Any]) -> list[tuple]:
    """What makes two suites equal, ignoring the ids GX assigns."""
    out = []
    for e in expectations:
        cfg = e.configuration if hasattr(e, "configuration") else e
        out.append((cfg.type, repr(sorted(cfg.kwargs.items())), repr(sorted((cfg.meta or {}).items()))))
    return sorted(out)


def checkpoint_name(suite: str) -> str:
    """The checkpoint that validates one suite's table."""
    return f"tailor_{suite}"


def get_context(project_dir: Path):
    """The GX file context rooted at ``project_dir`` (``<project_dir>/gx``)."""
    import great_expectations as gx

    Path(project_dir).mkdir(parents=True, exist_ok=True)
    return gx.get_context(mode="file", project_root_dir=str(project_dir))


def ensure_project(project_dir: Path, cfg: dict[str, Any]):
    """Create or update the GX project (datasource, suites, validation definitions, checkpoints).

    Idempotent: objects that exist with the same content are left untouched. Returns the context.
    """
    import great_expectations as gx

    ctx = get_context(project_dir)
    if ctx.variables.progress_bars is None:
        # Metric progress bars flood DAG task logs and pytest output; turn them off once.
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ctx.variables.save()
    try:
        ds = ctx.data_sources.get(DATASOURCE)
    except Exception:  # noqa: BLE001 - GX raises several types for "not found"
        ds = ctx.data_sources.add_pandas(DATASOURCE)
    all_specs = specs(cfg)
    for suite_name in SUITES:
        try:
            asset = ds.get_asset(suite_name)
        except Exception:  # noqa: BLE001
            asset = ds.add_dataframe_asset(suite_name)
        try:
            batch = asset.get_batch_definition(BATCH)
        except Exception:  # noqa: BLE001
            batch = asset.add_batch_definition_whole_dataframe(BATCH)
        wanted = [_expectation(s, cfg) for s in all_specs if s.suite == suite_name]
        try:
            suite = ctx.suites.get(suite_name)
            if _signature(suite.expectations) != _signature(wanted):
                for e in list(suite.expectations):
                    suite.delete_expectation(e)
                for e in wanted:
                    suite.add_expectation(e)
                suite.save()
        except Exception:  # noqa: BLE001 - missing suite
            suite = gx.ExpectationSuite(
                name=suite_name, expectations=wanted, meta={"tailor": "generated by pipelines/validate/suites.py"}
            )
            suite = ctx.suites.add(suite)
        try:
            vd = ctx.validation_definitions.get(suite_name)
        except Exception:  # noqa: BLE001
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
        name = checkpoint_name(suite_name)
        try:
            ctx.checkpoints.get(name)
        except Exception:  # noqa: BLE001
            ctx.checkpoints.add(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=[vd],
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                    result_format={
                        "result_format": "COMPLETE",
                        "unexpected_index_column_names": INDEX_COLUMNS.get(suite_name, [KEYS[suite_name]]),
                    },
                )
            )
    return ctx
