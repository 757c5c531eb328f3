"""The one model file Tailor loads: weights only, checked against a recorded hash.

A pickled model is code: whoever can write the file (the MLflow artifact store accepts
uploads without authentication) runs code wherever it is loaded. So Tailor never unpickles
a model. A model file is a ``torch.save`` of plain data, ``{"name", "config" (JSON text),
"state_dict", ...}``, read with ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers, and rebuilt with :func:`models.create` from the config.
Before loading, the file's sha256 is compared with the one recorded where the file cannot
be changed: a model version tag in MLflow's tracking store, or the bundle manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: File name of a model inside a bundle's ``models/<model>/`` and an MLflow run's ``weights/``.
FILE = "model.pt"


class UntrustedModel(RuntimeError):
    """A model file whose bytes are not the ones recorded when it was registered or bundled."""


def sha256(path: Path) -> str:
    """sha256 hex digest of a file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save(model: Any, name: str, config: Mapping[str, Any], path: Path, **extra: Any) -> str:
    """Write ``model``'s weights and config to ``path`` (atomically); return the file's sha256."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {"name": name, "config": json.dumps(dict(config), default=str), "state_dict": model.state_dict(), **extra}, tmp
    )
    os.replace(tmp, path)
    return sha256(path)


def load(path: Path, name: str | None = None, expected_sha256: str | None = None) -> Any:
    """Rebuild the model in ``path`` (eval mode, ``tailor_config`` attached).

    Raises :class:`UntrustedModel` when ``expected_sha256`` is given and differs from the
    file's, and ValueError when the file holds another model than ``name``. Only tensors and
    plain containers are read (``weights_only=True``): a pickle that would run code fails.
    """
    import torch

    import models

    path = Path(path)
    if expected_sha256 is not None:
        got = sha256(path)
        if got != expected_sha256:
            raise UntrustedModel(
                f"{path}: sha256 {got[:16]}... is not the recorded {expected_sha256[:16]}...; "
                "the file changed after it was registered: refusing to load it"
            )
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if name is not None and ck.get("name") not in (None, name):
        raise ValueError(f"{path} holds a {ck['name']} model, not {name}")
    config = json.loads(ck["config"])
    model = models.create(ck.get("name") or name, config)
    model.tailor_config = dict(config)
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def load_dir(path: Path, expected_sha256: str | None) -> Any:
    """The model in a bundle's ``models/<model>/`` directory, ready for inference (eval mode,
    batch-norm folded, channels-last: :func:`models._common.inference_ready`).

    Only when the file's sha256 is the one the bundle manifest recorded (``expected_sha256``;
    None is refused: a bundle without recorded hashes predates weights-only bundles and must
    be rebuilt).
    """
    from ._common import inference_ready

    path = Path(path)
    if not expected_sha256:
        raise UntrustedModel(f"{path}: the bundle manifest records no weights hash for it; rebuild the bundle")
    return inference_ready(load(path / FILE, path.name, expected_sha256))


def save_dir(model: Any, path: Path) -> str:
    """Write ``model`` (its ``tailor_config`` attached) into a bundle's ``models/<model>/``
    directory; returns the file's sha256 for the manifest."""
    path = Path(path)
    return save(model, path.name, model.tailor_config, path / FILE)
