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

IGNORE = -1  # target value of a head whose label is missing for a sample


class Tagger(FrozenPrefixMixin, nn.Module):
    """Shared pooled trunk + one head (dropout + linear) per label.

    With ``freeze_blocks`` = k the stem and first k stages stay as pretrained (no gradient,
    eval-mode batch-norm): :meth:`prefix` is then a fixed function of the crop, which
    training caches once (``pipelines.train.features``) and :meth:`from_prefix` finishes.
    ``forward`` is always the composition of the two. A whole frozen trunk yields a
    :class:`~models._common.Descriptor` of column groups; ``head_inputs`` says which groups
    each head reads (the colour head reads the garment-centre colour, not the scene's
    semantics), and heads reading the same groups share one hidden layer.
    """

    def __init__(self, heads: dict[str, list[str]], config: Mapping[str, Any]) -> None:
        super().__init__()
        self.vocab = {h: list(v) for h, v in heads.items()}
        self.trunk = trunk_from_config(config, "tf_efficientnet_lite0", num_classes=0)
        self.freeze_blocks = int(cfg_get(config, "freeze_blocks", 0))
        self._frozen = frozen_stages(self.trunk, self.freeze_blocks)
        self.descriptor = Descriptor.from_config(config)
        self.groups = prefix_groups(self.trunk, self.freeze_blocks, self.descriptor)
        # the colour groups ("centre", "colour") describe a garment's colour only: they are
        # for the heads that ask for them (head_inputs), the colour head; the others read
        # the trunk's semantics (on the val split either way scored the same within noise)
        default = [g for g in self.groups if g not in ("centre", "colour")]
        asked = dict(cfg_get(config, "head_inputs", {}))
        self.inputs = {h: tuple(asked.get(h) or default) for h in heads}
        for h, names in self.inputs.items():
            unknown = [g for g in names if g not in self.groups]
            if unknown:
                raise ValueError(f"head {h!r} reads {unknown}, not among the prefix groups {list(self.groups)}")
        dropout = float(cfg_get(config, "dropout", 0.2))
        hidden = int(cfg_get(config, "head_hidden", 0))
        necks: dict[str, nn.Module] = {}
        width: dict[str, int] = {}
        for names in dict.fromkeys(self.inputs.values()):
            key = "+".join(names)
            dim = sum(self.groups[g][1] - self.groups[g][0] for g in names)
            if hidden:
                # a frozen trunk's features are generic: one hidden layer lets the heads
                # recombine them (what fine-tuning the last stage would otherwise do)
                necks[key] = nn.Sequential(
                    nn.BatchNorm1d(dim), nn.Dropout(dropout), nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU()
                )
                width[key] = hidden
            else:
                necks[key] = nn.Identity()
                width[key] = dim
        self.necks = nn.ModuleDict(necks)
        self.heads = nn.ModuleDict(
            {
                h: nn.Sequential(nn.Dropout(dropout), nn.Linear(width["+".join(self.inputs[h])], len(v)))
                for h, v in heads.items()
            }
        )

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part: normalisation, stem and the first ``freeze_blocks`` stages."""
        return run_prefix(self.trunk, normalise(x), self.freeze_blocks, self.descriptor, raw=x)

    def from_prefix(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head from :meth:`prefix` features."""
        z = run_tail(self.trunk, f, self.freeze_blocks)
        necked = {}
        for key, neck in self.necks.items():
            necked[key] = neck(group_columns(z, self.groups, key.split("+")))
        return {h: head(necked["+".join(self.inputs[h])]) for h, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.from_prefix(self.prefix(x))


def masked_cross_entropy(
    logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], weights: dict[str, float] | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
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
    """Multi-head tagger from ``config``: heads ({name: values}; default: the product taxonomy's
    category and attributes), backbone, pretrained, pretrained_hub, freeze_blocks (beyond the
    trunk's stages: all of it, conv head included), the descriptor (grid_stages, grid,
    centre_stages, centre_rgb), head_inputs ({head: [groups]}), head_hidden (0: linear
    heads), dropout."""
    from .taxonomy import ATTRIBUTES, CATEGORIES

    heads = cfg_get(config, "heads", None) or {
        "category": list(CATEGORIES),
        **{a: list(v) for a, v in ATTRIBUTES.items()},
    }
    return Tagger(dict(heads), config)
