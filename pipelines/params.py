"""The trust boundary of DAG run parameters.

Anyone who may trigger a DAG (the Airflow UI or REST API) sets its ``params``. A parameter
naming a file or directory could otherwise point a task at any path the worker can read or
write (``out: /etc``, ``bundle: /home/someone``), and a model URI at any model in the
registry. :func:`check_dag_params` accepts only:

- paths inside the platform's data or var root (``TAILOR_DATA_DIR``, ``TAILOR_VAR_DIR``),
  after resolving ``..`` and symbolic links; a malls file may also live in ``config/``;
- snapshot names without path separators;
- ``champion``, ``pixels``, or a ``models:/`` URI of one of the four registered models.

The CLI is not restricted: whoever runs it already has the machine's shell.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.settings import PROJECT_ROOT, Settings, get_settings

#: DAG parameters that name a path, and the roots each may lie in (besides data and var).
PATH_PARAMS: dict[str, tuple[str, ...]] = {
    "malls_file": ("config",),
    "out": (),
    "snapshot": (),
    "annotations": (),
    "training_set": (),
    "catalog": (),
    "images_root": (),
    "index_dir": (),
    "bundle": (),
    "world": (),
    "fresh_world": (),
}
#: DAG parameters that name a model.
MODEL_PARAMS = ("embedder",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ParamError(ValueError):
    """A DAG parameter outside what a run may touch; the message names the parameter."""


def _model_uri_ok(value: str) -> bool:
    from pipelines.manifests import MODELS

    names = "|".join(re.escape(m) for m in MODELS)
    return (
        value in ("champion", "pixels")
        or re.fullmatch(rf"models:/tailor-({names})(@[A-Za-z0-9_-]+|/[0-9]+)", value) is not None
    )


def allowed_path(value: str, name: str, extra_roots: tuple[str, ...] = (), s: Settings | None = None) -> Path:
    """``value`` resolved (relative paths from the project root), or :class:`ParamError` when
    it lies outside the data and var roots (and ``extra_roots``: ``config``)."""
    s = s or get_settings()
    p = Path(value).expanduser()
    p = (p if p.is_absolute() else Path(s.root) / p).resolve()
    roots = [Path(s.data_dir).resolve(), Path(s.var_dir).resolve()]
    roots += [(PROJECT_ROOT / r).resolve() for r in extra_roots]
    if not any(p == r or r in p.parents for r in roots):
        raise ParamError(
            f"DAG parameter {name!r}: {value!r} is outside the roots a run may use ({', '.join(str(r) for r in roots)})"
        )
    return p


def check_dag_params(params: dict[str, Any] | None, s: Settings | None = None) -> dict[str, Any]:
    """``params`` unchanged when every path and model parameter is acceptable; otherwise
    :class:`ParamError` naming the first one that is not (the run fails before any work).

    The error is also Airflow's ``AirflowFailException``: a bad parameter fails its task at
    once instead of being retried (a task with retries would wait out every retry delay)."""
    try:
        return _checked(params, s)
    except ParamError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        no_retry = type("DagParamError", (ParamError, AirflowFailException), {})
        raise no_retry(str(exc)) from None


def _checked(params: dict[str, Any] | None, s: Settings | None) -> dict[str, Any]:
    params = dict(params or {})
    for name, value in params.items():
        if not value:
            continue
        if name in PATH_PARAMS:
            allowed_path(str(value), name, PATH_PARAMS[name], s)
        elif name in MODEL_PARAMS and not _model_uri_ok(str(value)):
            raise ParamError(
                f"DAG parameter {name!r}: {value!r} is not champion, pixels or a models:/ URI "
                "of tailor-detector, tailor-parser, tailor-tagger or tailor-embedder"
            )
        elif name == "crop_with" and not (
            value in ("none", "champion")
            or re.fullmatch(r"models:/tailor-detector(@[A-Za-z0-9_-]+|/[0-9]+)", str(value))
        ):
            raise ParamError(
                f"DAG parameter 'crop_with': {value!r} is not none, champion or a models:/ URI of tailor-detector"
            )
        elif name == "snapshot_name" and not _NAME.fullmatch(str(value)):
            raise ParamError(
                f"DAG parameter 'snapshot_name': {value!r} must be a plain name "
                "(letters, digits, '_', '.', '-'; no path)"
            )
    return params
