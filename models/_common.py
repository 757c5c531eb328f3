"""Private helpers shared by the model builders: config access and timm backbones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ImageNet statistics; every model normalises its input with them (pretrained or not) so
#: switching ``pretrained`` on needs no other change.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def cfg_get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``config[key]`` or ``default`` when the key is absent or None."""
    value = config.get(key)
    return default if value is None else value


def timm_backbone(name: str, pretrained: bool = False, **kwargs: Any):
    """A timm model; ``pretrained`` is honoured but off by default (nothing downloads offline)."""
    import timm

    return timm.create_model(name, pretrained=bool(pretrained), **kwargs)


def normalise(x):
    """Normalise a float batch in [0, 1] (N, 3, H, W) with the ImageNet statistics."""
    import torch

    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
