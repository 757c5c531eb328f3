"""Tailor's model definitions behind one factory, timm-style.

Each model module registers a builder with :func:`register`; callers build by name with
:func:`create` (``create("tagger", config)``) and list what exists with
:func:`list_models`. Builders take one config mapping so DAGs and the CLI can pass
resolved configuration straight through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_REGISTRY: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
#: The four models of the platform, in pipeline order (detect -> parse -> tag -> search).
#: Every other list of them (DAG params, bundles, manifests, the CLI) is this one.
MODEL_NAMES: tuple[str, ...] = ("detector", "parser", "tagger", "embedder")
_BUILTIN = MODEL_NAMES
_loaded = False


def _load_builtin() -> None:
    """Import the built-in model modules (they register themselves) on first use.

    Lazy so that ``import models`` stays light (no torch/timm) for DAG files and the CLI.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in _BUILTIN:
        importlib.import_module(f"{__name__}.{mod}")


def register(name: str) -> Callable[[Callable[[Mapping[str, Any]], Any]], Callable[[Mapping[str, Any]], Any]]:
    """Decorator: register ``fn(config) -> model`` under ``name`` (names are unique)."""

    def deco(fn: Callable[[Mapping[str, Any]], Any]) -> Callable[[Mapping[str, Any]], Any]:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def create(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """Build the model registered as ``name`` from ``config``; unknown names list the known ones."""
    _load_builtin()
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {list_models() or 'none yet'}") from None
    return builder(dict(config or {}))


def inference_ready(model: Any) -> Any:
    """``model`` as every served or indexing forward pass runs it: eval mode, batch-norm
    folded, channels-last (:func:`models._common.inference_ready`)."""
    from ._common import inference_ready as ready

    return ready(model)
