"""Garment tagger: an EfficientNet-family timm trunk with one linear head per label.

``create("tagger", {"heads": {"category": [...], "color": [...], ...}})`` maps a crop batch
(N, 3, H, W) in [0, 1] to ``{head: (N, n_values) logits}``. Training masks heads whose
label is unknown (target -1) instead of guessing them: see :func:`masked_cross_entropy`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from ._common import cfg_get, normalise, timm_backbone

IGNORE = -1  # target value of a head whose label is missing for a sample


class Tagger(nn.Module):
    """Shared pooled trunk + ``nn.ModuleDict`` of heads (dropout + linear)."""

    def __init__(self, heads: dict[str, list[str]], backbone: str, pretrained: bool, dropout: float) -> None:
        super().__init__()
        self.vocab = {h: list(v) for h, v in heads.items()}
        self.trunk = timm_backbone(backbone, pretrained, num_classes=0)
        dim = self.trunk.num_features
        self.heads = nn.ModuleDict({h: nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, len(v))) for h, v in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.trunk(normalise(x))
        return {h: head(z) for h, head in self.heads.items()}


def masked_cross_entropy(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                         weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over heads of cross-entropy over the samples whose label is known (target != -1).

    A head with no known label in the batch contributes nothing (not a zero that would
    dilute the others). Returns the total and the per-head values for logging.
    """
    total = logits[next(iter(logits))].new_zeros(())
    parts: dict[str, float] = {}
    n = 0
    for h, lg in logits.items():
        t = targets[h]
        known = t != IGNORE
        if not bool(known.any()):
            continue
        loss = F.cross_entropy(lg[known], t[known])
        total = total + (weights or {}).get(h, 1.0) * loss
        parts[h] = float(loss.detach())
        n += 1
    return total / max(n, 1), parts


@register("tagger")
def build_tagger(config: Mapping[str, Any]) -> nn.Module:
    """Multi-head tagger from ``config``: heads ({name: values}), backbone, pretrained, dropout."""
    from pipelines.synth.taxonomy import ATTRIBUTES, CATEGORIES

    heads = cfg_get(config, "heads", None) or {"category": list(CATEGORIES), **{a: list(v) for a, v in ATTRIBUTES.items()}}
    return Tagger(dict(heads), str(cfg_get(config, "backbone", "efficientnet_b0")),
                  bool(cfg_get(config, "pretrained", False)), float(cfg_get(config, "dropout", 0.2)))
