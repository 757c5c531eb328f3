"""Model adapters: how the service runs the four models (``pipelines.train``'s inference
API: ``predict``, ``build_model``) and the tagger + embedder pair on stacked crop batches.

The bundle's model files are read with :func:`models.checkpoint.load_dir`, its index with
:func:`pipelines.index.flat.load_index`; nothing else of the training or index code is
used by the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


# --------------------------------------------------------------------------- models
def predict(name: str, model: Any, images: list[Any]) -> Any:
    """``pipelines.train.predict`` (detector/parser/tagger/embedder on PIL images)."""
    from pipelines.train import predict as _predict

    return _predict(name, model, images)


def crop_batch(images: Sequence[Any], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 square crops (aspect kept, grey padding) as the tagger and
    embedder saw them in training (no context: the crop is the box)."""
    from pipelines.garments import garment_crop

    return np.stack([garment_crop(im, None, size, context=0.0) for im in images])


def _shares_prefix(tagger: Any, embedder: Any) -> bool:
    """:func:`models._common.same_frozen_prefix`, computed once per model pair."""
    key = id(embedder)
    memo = tagger.__dict__.setdefault("_tailor_shares_prefix", {})
    if key not in memo:
        from models._common import same_frozen_prefix

        memo[key] = same_frozen_prefix(tagger, embedder)
    return memo[key]


def crop_forward(
    tagger: Any, embedder: Any, crops: np.ndarray
) -> tuple[list[dict[str, tuple[str, float]]], np.ndarray]:
    """Tagger + embedder on a uint8 crop batch; returns ``([{head: (value, prob)}], (N, D))``.

    Works on tensors (not PIL) so crops from many requests can be stacked into one batch.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        ts, es = int(tagger.tailor_config["crop_size"]), int(embedder.tailor_config["crop_size"])
        xt = x if x.shape[-1] == ts else F.interpolate(x, size=(ts, ts), mode="bilinear", align_corners=False)
        xe = x if x.shape[-1] == es else F.interpolate(x, size=(es, es), mode="bilinear", align_corners=False)
        if ts == es and _shares_prefix(tagger, embedder):
            f = tagger.prefix(xt)  # one frozen-trunk pass serves both heads
            logits, emb = tagger.from_prefix(f), embedder.from_prefix(f).float().numpy()
        else:
            logits = tagger(xt)
            emb = embedder(xe).float().numpy()
    tags: list[dict[str, tuple[str, float]]] = [{} for _ in range(x.shape[0])]
    for head, lg in logits.items():
        conf, idx = lg.softmax(1).max(1)
        for j in range(x.shape[0]):
            tags[j][head] = (tagger.vocab[head][int(idx[j])], float(conf[j]))
    return tags, emb.astype(np.float32)
