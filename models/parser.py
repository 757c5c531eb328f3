"""Human parser: PSPNet (pyramid pooling) with a timm encoder, one logit map per class.

``create("parser", {"classes": [...], "encoder": "tu-resnet18"})`` maps an (N, 3, H, W)
float batch in [0, 1] to (N, C, H, W) logits; H and W must be multiples of 8.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from . import register
from ._common import cfg_get, normalise


class Parser(nn.Module):
    """Normalisation + ``smp.PSPNet``; ``classes`` is kept for decoding predictions."""

    def __init__(self, classes: list[str], encoder: str, pretrained: bool, depth: int, psp_channels: int) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.classes = classes
        self.net = smp.PSPNet(
            encoder_name=encoder,
            encoder_weights="imagenet" if pretrained else None,
            encoder_depth=depth,
            psp_out_channels=psp_channels,
            classes=len(classes),
            upsampling=2 ** depth,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(normalise(x))


@register("parser")
def build_parser(config: Mapping[str, Any]) -> nn.Module:
    """PSPNet from ``config``: classes (list of parsing class names), encoder, pretrained,
    encoder_depth (3 -> output stride 8), psp_channels."""
    from pipelines.synth.taxonomy import PARSING_CLASSES

    return Parser(
        list(cfg_get(config, "classes", PARSING_CLASSES)),
        str(cfg_get(config, "encoder", "tu-resnet18")),
        bool(cfg_get(config, "pretrained", False)),
        int(cfg_get(config, "encoder_depth", 3)),
        int(cfg_get(config, "psp_channels", 256)),
    )
