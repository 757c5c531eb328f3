"""Private helpers shared by the model builders: config access, timm trunks, partial freezing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ImageNet statistics; every model normalises its input with them (pretrained or not) so
#: switching ``pretrained`` on needs no other change. (The packaged Lite0 weights were
#: trained on [-1, 1] inputs; with these statistics they classify the same real photos
#: into the same ImageNet classes, and fine-tuning absorbs the small shift.)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def cfg_get(config: Mapping[str, Any], key: str, default: Any) -> Any:
    """``config[key]`` or ``default`` when the key is absent or None."""
    value = config.get(key)
    return default if value is None else value


def timm_backbone(name: str, pretrained: bool = False, hub: bool = False, **kwargs: Any):
    """A timm model, with ImageNet weights when ``pretrained``.

    ``tf_efficientnet_lite0`` takes the weights packaged with the environment
    (:mod:`models.pretrained`); nothing is downloaded. Any other name needs ``hub=True``
    (timm's ``pretrained=True``, i.e. a download or a warm timm cache) and otherwise fails
    with a message saying so, rather than silently training from scratch.
    """
    import timm

    from .pretrained import LITE0, load_lite0

    if pretrained and name == LITE0:
        return load_lite0(timm.create_model(name, pretrained=False, **kwargs))
    if pretrained and not hub:
        raise ValueError(f"pretrained weights for {name!r} would come from the timm hub (a download); "
                         f"use backbone {LITE0!r} (weights packaged), set pretrained_hub: true, or pretrained: false")
    return timm.create_model(name, pretrained=bool(pretrained), **kwargs)


def trunk_from_config(config: Mapping[str, Any], default: str, **kwargs: Any):
    """:func:`timm_backbone` from a model config's ``backbone`` / ``pretrained`` / ``pretrained_hub``."""
    return timm_backbone(str(cfg_get(config, "backbone", default)), bool(cfg_get(config, "pretrained", True)),
                         bool(cfg_get(config, "pretrained_hub", False)), **kwargs)


def frozen_stages(trunk: Any, n_blocks: int) -> list[Any]:
    """Freeze an EfficientNet-style timm trunk's stem and first ``n_blocks`` stages (no
    gradients) and return those modules; the caller keeps them in eval mode (see
    :class:`FrozenPrefixMixin`) so their batch-norm statistics stay the pretrained ones."""
    if n_blocks <= 0:
        return []
    if not hasattr(trunk, "blocks"):
        raise ValueError(f"freeze_blocks needs an EfficientNet-style trunk (conv_stem, bn1, blocks); got "
                         f"{type(trunk).__name__}")
    mods = [trunk.conv_stem, trunk.bn1, *list(trunk.blocks)[:n_blocks]]
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(False)
    return mods


class FrozenPrefixMixin:
    """``train()`` that leaves the frozen prefix (``self._frozen``) in eval mode.

    A frozen stage must compute exactly what it computed when its features were cached,
    and what it computes at serving time: batch-norm in eval mode, always.
    """

    _frozen: list[Any]

    def train(self, mode: bool = True):  # type: ignore[override]
        super().train(mode)  # type: ignore[misc]
        for m in getattr(self, "_frozen", []):
            m.eval()
        return self


def run_prefix(trunk: Any, x: Any, n_blocks: int) -> Any:
    """Stem + the first ``n_blocks`` stages of an EfficientNet-style trunk."""
    x = trunk.bn1(trunk.conv_stem(x))
    for block in list(trunk.blocks)[:n_blocks]:
        x = block(x)
    return x


def run_tail(trunk: Any, f: Any, n_blocks: int) -> Any:
    """The stages after ``n_blocks``, the head convolution and global pooling: pooled features."""
    for block in list(trunk.blocks)[n_blocks:]:
        f = block(f)
    return trunk.forward_head(trunk.bn2(trunk.conv_head(f)), pre_logits=True)


def normalise(x):
    """Normalise a float batch in [0, 1] (N, 3, H, W) with the ImageNet statistics."""
    import torch

    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
