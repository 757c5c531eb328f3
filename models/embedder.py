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
from ._common import (
    Descriptor,
    FrozenPrefixMixin,
    cfg_get,
    frozen_stages,
    group_columns,
    normalise,
    prefix_groups,
    run_prefix,
    run_tail,
    trunk_from_config,
)


class Embedder(FrozenPrefixMixin, nn.Module):
    """Trunk -> (BN) -> linear -> L2 normalisation; output (N, dim) with unit rows.

    ``freeze_blocks`` splits the trunk as in :class:`models.tagger.Tagger`: a frozen
    :meth:`prefix` (cacheable) and a trained :meth:`from_prefix`.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        self.trunk = trunk_from_config(config, "tf_efficientnet_lite0", num_classes=0)
        self.freeze_blocks = int(cfg_get(config, "freeze_blocks", 0))
        self._frozen = frozen_stages(self.trunk, self.freeze_blocks)
        self.descriptor = Descriptor.from_config(config)
        self.dim = int(cfg_get(config, "dim", 128))
        self.groups = prefix_groups(self.trunk, self.freeze_blocks, self.descriptor)
        # ``inputs``: the descriptor groups the projection reads (all by default). The
        # embedder shares the tagger's descriptor, so one trunk pass serves both, but not
        # every group helps it: the garment-pixel colour histogram (group "colour") cost
        # real-photo same-category precision@5 0.07 in the demo chain.
        self.inputs = tuple(cfg_get(config, "inputs", None) or self.groups)
        unknown = [g for g in self.inputs if g not in self.groups]
        if unknown:
            raise ValueError(f"embedder inputs {unknown} are not among the prefix groups {list(self.groups)}")
        n = sum(self.groups[g][1] - self.groups[g][0] for g in self.inputs)
        hidden = int(cfg_get(config, "head_hidden", 0))
        if hidden:  # a frozen trunk: a small MLP learns the metric space from its pooled features
            self.proj = nn.Sequential(
                nn.BatchNorm1d(n),
                nn.Dropout(float(cfg_get(config, "dropout", 0.1))),
                nn.Linear(n, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Linear(hidden, self.dim),
            )
        else:
            self.proj = nn.Sequential(nn.BatchNorm1d(n), nn.Linear(n, self.dim))
        # training only: cosine classifier over the product taxonomy's categories on the
        # embedding (``category_loss`` > 0), so that same-category items sit together
        cats = list(cfg_get(config, "categories", None) or [])
        self.category_head = (
            nn.Linear(self.dim, len(cats), bias=False)
            if cats and float(cfg_get(config, "category_loss", 0.0)) > 0
            else None
        )

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: normalisation, stem and the first ``freeze_blocks`` stages."""
        return run_prefix(self.trunk, normalise(x), self.freeze_blocks, self.descriptor, raw=x)

    def from_prefix(self, f: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings from :meth:`prefix` features."""
        z = group_columns(run_tail(self.trunk, f, self.freeze_blocks), self.groups, self.inputs)
        return F.normalize(self.proj(z), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_prefix(self.prefix(x))


def category_logits(model: Embedder, emb: torch.Tensor, scale: float = 16.0) -> torch.Tensor:
    """Cosine-similarity logits of unit embeddings against the (normalised) category weights
    (the auxiliary loss of training: it pulls each category together in the metric space)."""
    return scale * emb @ F.normalize(model.category_head.weight, dim=1).t()


def metric_loss(config: Mapping[str, Any]):
    """``(loss_fn, miner)`` from pytorch-metric-learning: Multi-Similarity loss with its
    miner (default) or a triplet margin loss with a semi-hard triplet miner."""
    from pytorch_metric_learning import losses, miners

    kind = str(cfg_get(config, "loss", "multi_similarity"))
    if kind == "triplet":
        margin = float(cfg_get(config, "margin", 0.2))
        return losses.TripletMarginLoss(margin=margin), miners.TripletMarginMiner(
            margin=margin, type_of_triplets="semihard"
        )
    return (
        losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5),
        miners.MultiSimilarityMiner(epsilon=float(cfg_get(config, "miner_epsilon", 0.1))),
    )


@register("embedder")
def build_embedder(config: Mapping[str, Any]) -> nn.Module:
    """Embedder from ``config``: backbone, pretrained, pretrained_hub, freeze_blocks, dim,
    the descriptor (see :class:`models._common.Descriptor`), inputs (the descriptor groups
    read; default all), head_hidden (0: one linear projection), dropout; categories and
    category_loss (> 0: a cosine classifier over the categories, used in training only)."""
    return Embedder(config)
