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
from ._common import FrozenPrefixMixin, cfg_get, frozen_stages, normalise, out_blocks

#: smp's name for timm's tf_efficientnet_lite0 used as an encoder ("tu-" = timm universal)
LITE0_ENCODER = "tu-tf_efficientnet_lite0"


class Parser(FrozenPrefixMixin, nn.Module):
    """Normalisation + ``smp.PSPNet``; ``classes`` is kept for decoding predictions.

    The Lite0 encoder takes the packaged ImageNet weights (:mod:`models.pretrained`);
    another encoder with ``pretrained`` needs ``hub`` (smp downloads its weights).
    """

    def __init__(
        self,
        classes: list[str],
        encoder: str,
        pretrained: bool,
        depth: int,
        psp_channels: int,
        hub: bool = False,
        freeze_blocks: int = 0,
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        from .pretrained import load_lite0

        if pretrained and encoder != LITE0_ENCODER and not hub:
            raise ValueError(
                f"pretrained weights for encoder {encoder!r} would be downloaded; use "
                f"{LITE0_ENCODER!r} (weights packaged), set pretrained_hub: true, or pretrained: false"
            )
        self.classes = classes
        self.net = smp.PSPNet(
            encoder_name=encoder,
            encoder_weights="imagenet" if (pretrained and encoder != LITE0_ENCODER) else None,
            encoder_depth=depth,
            psp_out_channels=psp_channels,
            classes=len(classes),
            upsampling=2**depth,
        )
        if pretrained and encoder == LITE0_ENCODER:
            load_lite0(self.net.encoder, prefix="model.")
        self._frozen = frozen_stages(self.net.encoder.model, freeze_blocks) if freeze_blocks else []
        self.freeze_blocks = freeze_blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(normalise(x))

    def from_cached(self, cached: Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Logits from the frozen prefix's cached output (``cached[freeze_blocks - 1]``, see
        :func:`pipelines.train.features.scene_features`): the encoder's remaining stages,
        then PSPNet's decoder and head, which read only the deepest map."""
        trunk = self.net.encoder.model
        h = cached[self.freeze_blocks - 1]
        for block in list(trunk.blocks)[self.freeze_blocks : max(out_blocks(trunk)) + 1]:
            h = block(h)
        return self.net.segmentation_head(self.net.decoder([h]))


@register("parser")
def build_parser(config: Mapping[str, Any]) -> nn.Module:
    """PSPNet from ``config``: classes (list of parsing class names), encoder, pretrained,
    pretrained_hub, freeze_blocks, encoder_depth (3 -> output stride 8), psp_channels."""
    from .taxonomy import PARSING_CLASSES

    return Parser(
        list(cfg_get(config, "classes", PARSING_CLASSES)),
        str(cfg_get(config, "encoder", LITE0_ENCODER)),
        bool(cfg_get(config, "pretrained", True)),
        int(cfg_get(config, "encoder_depth", 3)),
        int(cfg_get(config, "psp_channels", 256)),
        hub=bool(cfg_get(config, "pretrained_hub", False)),
        freeze_blocks=int(cfg_get(config, "freeze_blocks", 0)),
    )
