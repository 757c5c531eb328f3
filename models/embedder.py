"""Embedder: a timm trunk + projection to an L2-normalised vector for similarity search.

Trained with a metric-learning loss and hard-pair mining (see :func:`metric_loss`): the
labels are product identities (shop shot <-> the product worn in scenes) and, for real
photos without identity, their category.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from ._common import cfg_get, normalise, timm_backbone


class Embedder(nn.Module):
    """Trunk -> (BN) -> linear -> L2 normalisation; output (N, dim) with unit rows."""

    def __init__(self, backbone: str, pretrained: bool, dim: int) -> None:
        super().__init__()
        self.trunk = timm_backbone(backbone, pretrained, num_classes=0)
        self.proj = nn.Sequential(nn.BatchNorm1d(self.trunk.num_features), nn.Linear(self.trunk.num_features, dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.trunk(normalise(x))), dim=1)


def metric_loss(config: Mapping[str, Any]):
    """``(loss_fn, miner)`` from pytorch-metric-learning: Multi-Similarity loss with its
    miner (default) or a triplet margin loss with a semi-hard triplet miner."""
    from pytorch_metric_learning import losses, miners

    kind = str(cfg_get(config, "loss", "multi_similarity"))
    if kind == "triplet":
        margin = float(cfg_get(config, "margin", 0.2))
        return losses.TripletMarginLoss(margin=margin), miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
    return (losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5),
            miners.MultiSimilarityMiner(epsilon=float(cfg_get(config, "miner_epsilon", 0.1))))


@register("embedder")
def build_embedder(config: Mapping[str, Any]) -> nn.Module:
    """Embedder from ``config``: backbone, pretrained, dim."""
    return Embedder(str(cfg_get(config, "backbone", "resnet18")), bool(cfg_get(config, "pretrained", False)),
                    int(cfg_get(config, "dim", 128)))
