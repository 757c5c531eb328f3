"""Garment detector: RetinaNet (one-stage, focal loss) on a light timm backbone + FPN.

``create("detector", {"categories": [...], "backbone": "resnet18", "image_size": 320})``
returns a torchvision :class:`~torchvision.models.detection.RetinaNet`. Labels are
``1..len(categories)`` (0 is unused, torchvision's convention), boxes are ``xyxy`` pixels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import register
from ._common import MEAN, STD, FrozenPrefixMixin, cfg_get, frozen_stages, tail_maps, timm_backbone


class TimmFPN(FrozenPrefixMixin, nn.Module):
    """timm ``features_only`` backbone -> FPN (P3-P5) + P6/P7, as RetinaNet expects.

    torchvision's detection models need ``out_channels`` and an ordered dict of maps. With
    ``freeze_blocks`` = k the stem and first k stages keep their pretrained weights and
    batch-norm statistics (cheaper steps; small detection sets cannot re-learn edges).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool,
        out_channels: int,
        out_indices: tuple[int, ...],
        hub: bool = False,
        freeze_blocks: int = 0,
    ) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        self.body = timm_backbone(name, pretrained, hub, features_only=True, out_indices=out_indices)
        self._frozen = frozen_stages(self.body, freeze_blocks)
        self.freeze_blocks = freeze_blocks
        chans = self.body.feature_info.channels()
        self.fpn = FeaturePyramidNetwork(chans, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels))
        self.out_channels = out_channels
        self._cached: Mapping[int, torch.Tensor] | None = None

    @contextmanager
    def replay(self, cached: Mapping[int, torch.Tensor]) -> Iterator[None]:
        """Within the block, ``forward`` ignores its input and starts from ``cached``, the
        frozen prefix's block outputs for the batch (``{block: (N, C, h, w)}``, see
        :func:`models._common.tail_maps`). Training and validation run the real RetinaNet
        code path (anchors, matching, losses, decoding) on cached features this way."""
        self._cached = cached
        try:
            yield
        finally:
            self._cached = None

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self._cached is not None:
            feats = tail_maps(self.body, self._cached, self.freeze_blocks)
        else:
            feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


@register("detector")
def build_detector(config: Mapping[str, Any]) -> nn.Module:
    """RetinaNet with ``config``: categories (list), backbone, pretrained, pretrained_hub,
    freeze_blocks, image_size, fpn_channels, head_convs (RetinaNet's 4 by default),
    anchor_sizes (base size of the 5 levels), anchor_scales (per level, 3 by default),
    head_norm ("group": GroupNorm in the heads, as torchvision's RetinaNet v2; "none": the
    original heads), score_thresh, detections_per_img."""
    from functools import partial

    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    categories = list(cfg_get(config, "categories", ["garment"]))
    size = int(cfg_get(config, "image_size", 320))
    fpn = int(cfg_get(config, "fpn_channels", 96))
    backbone = TimmFPN(
        str(cfg_get(config, "backbone", "tf_efficientnet_lite0")),
        bool(cfg_get(config, "pretrained", True)),
        fpn,
        tuple(cfg_get(config, "out_indices", (2, 3, 4))),
        hub=bool(cfg_get(config, "pretrained_hub", False)),
        freeze_blocks=int(cfg_get(config, "freeze_blocks", 0)),
    )
    base = list(cfg_get(config, "anchor_sizes", [16, 32, 64, 128, 256]))
    # ``anchor_scales`` scales per level (RetinaNet's 3: 2^0, 2^(1/3), 2^(2/3)) and three
    # aspect ratios; fewer scales make the heads' last convolutions proportionally cheaper
    n_scales = int(cfg_get(config, "anchor_scales", 3))
    sizes = tuple(tuple(int(b * 2 ** (k / n_scales)) for k in range(n_scales)) for b in base)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    norm = str(cfg_get(config, "head_norm", "none"))
    if norm not in ("none", "group"):
        raise ValueError(f"head_norm must be 'none' or 'group', not {norm!r}")
    # GroupNorm heads (RetinaNet v2, FCOS) learn faster from their small initial weights
    # than the original ones: val mAP@0.5 0.51 against 0.36 after the demo's 8 epochs
    head = RetinaNetHead(
        fpn,
        anchors.num_anchors_per_location()[0],
        len(categories) + 1,
        norm_layer=partial(nn.GroupNorm, 16) if norm == "group" else None,
    )
    model = RetinaNet(
        backbone,
        num_classes=len(categories) + 1,
        min_size=size,
        max_size=size,
        image_mean=list(MEAN),
        image_std=list(STD),
        anchor_generator=anchors,
        head=head,
        score_thresh=float(cfg_get(config, "score_thresh", 0.05)),
        detections_per_img=int(cfg_get(config, "detections_per_img", 100)),
    )
    convs = int(cfg_get(config, "head_convs", 4))
    if convs < 4:
        # RetinaNet's heads run 4 convolutions on every pyramid level, the finest (stride 8)
        # included: on CPU they cost more than the Lite0 backbone. Fewer is a speed choice.
        for sub in (model.head.classification_head, model.head.regression_head):
            sub.conv = nn.Sequential(*list(sub.conv)[:convs])
    model.categories = categories  # carried for predict(); not a parameter
    return model
