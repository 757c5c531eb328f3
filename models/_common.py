"""Private helpers shared by the model builders: config access, timm trunks, partial freezing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

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
        raise ValueError(
            f"pretrained weights for {name!r} would come from the timm hub (a download); "
            f"use backbone {LITE0!r} (weights packaged), set pretrained_hub: true, or pretrained: false"
        )
    return timm.create_model(name, pretrained=bool(pretrained), **kwargs)


def trunk_from_config(config: Mapping[str, Any], default: str, **kwargs: Any):
    """:func:`timm_backbone` from a model config's ``backbone`` / ``pretrained`` / ``pretrained_hub``."""
    return timm_backbone(
        str(cfg_get(config, "backbone", default)),
        bool(cfg_get(config, "pretrained", True)),
        bool(cfg_get(config, "pretrained_hub", False)),
        **kwargs,
    )


def frozen_stages(trunk: Any, n_blocks: int) -> list[Any]:
    """Freeze an EfficientNet-style timm trunk's stem and first ``n_blocks`` stages (no
    gradients) and return those modules; the caller keeps them in eval mode (see
    :class:`FrozenPrefixMixin`) so their batch-norm statistics stay the pretrained ones.
    ``n_blocks`` beyond the last stage freezes the head convolution too: the whole trunk
    is then a fixed feature extractor and only what sits on its pooled output trains."""
    if n_blocks <= 0:
        return []
    if not hasattr(trunk, "blocks"):
        raise ValueError(
            f"freeze_blocks needs an EfficientNet-style trunk (conv_stem, bn1, blocks); got {type(trunk).__name__}"
        )
    mods = [trunk.conv_stem, trunk.bn1, *list(trunk.blocks)[:n_blocks]]
    if n_blocks > len(trunk.blocks) and hasattr(trunk, "conv_head"):
        mods += [trunk.conv_head, trunk.bn2]
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

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        for m in getattr(self, "_frozen", []):
            m.eval()
        return self


@dataclass(frozen=True)
class Descriptor:
    """What a whole-trunk-frozen crop model reads from the trunk, besides its pooled output.

    - ``grid_stages``: stages whose output is averaged over a ``grid`` x ``grid`` layout:
      where things are in the square crop (a long skirt fills it top to bottom, shorts do
      not), which global pooling throws away;
    - ``centre_stages`` and ``centre_rgb``: early stages' outputs (and the input's colour)
      averaged over the central half of the crop, where the garment is: its colour and fine
      texture, without the background around it;
    - ``content_hist``: an RGB histogram of the whole crop's drawn pixels (the grey fill
      around a box left out): a wide pair of shoes sits outside the central half;
    - ``fg_hist``: the group ``colour``, an RGB histogram (square-rooted) of the garment's
      own pixels, told from the backdrop by colour: pixels farther than ``fg_tau`` (per
      channel, in [0, 1]) from the median colour of the box's rim (:func:`_fg_hist`). A
      tight box's rim is mostly backdrop, even where the garment (two shoes, a cap) leaves
      the centre empty; measured on the demo's val crops with a linear model, colour 0.70
      from ``content_hist`` and 0.82 from this.

    The prefix is their concatenation in the order of :meth:`groups`.
    """

    grid_stages: tuple[int, ...] = ()
    grid: int = 3
    centre_stages: tuple[int, ...] = ()
    centre_rgb: bool = False
    centre_hist: int = 0  # bins per channel of an RGB histogram of the centre (0: none)
    content_hist: int = 0  # bins per channel of an RGB histogram of the drawn pixels (0: none)
    fg_hist: int = 0  # bins per channel of the garment-pixel histogram (group "colour"; 0: none)
    fg_tau: float = 0.1

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Descriptor:
        return cls(
            tuple(int(i) for i in cfg_get(config, "grid_stages", ())),
            int(cfg_get(config, "grid", 3)),
            tuple(int(i) for i in cfg_get(config, "centre_stages", ())),
            bool(cfg_get(config, "centre_rgb", False)),
            int(cfg_get(config, "centre_hist", 0)),
            int(cfg_get(config, "content_hist", 0)),
            int(cfg_get(config, "fg_hist", 0)),
            float(cfg_get(config, "fg_tau", 0.1)),
        )

    def groups(self, trunk: Any) -> dict[str, tuple[int, int]]:
        """``{"pooled" | "grid" | "centre" | "colour": (start, stop)}`` column ranges of the prefix."""
        chans = [
            int(b[-1].conv_pwl.out_channels if hasattr(b[-1], "conv_pwl") else b[-1].conv_pw.out_channels)
            for b in trunk.blocks
        ]
        widths = {
            "pooled": int(trunk.num_features),
            "grid": sum(chans[i] for i in self.grid_stages) * self.grid**2,
            "centre": sum(chans[i] for i in self.centre_stages)
            + (3 if self.centre_rgb else 0)
            + self.centre_hist**3
            + self.content_hist**3,
            "colour": self.fg_hist**3,
        }
        out, at = {}, 0
        for name, w in widths.items():
            if w:
                out[name] = (at, at + w)
                at += w
        return out


def _centre(x: Any) -> Any:
    h, w = x.shape[2], x.shape[3]
    return x[:, :, h // 4 : h - h // 4, w // 4 : w - w // 4].mean((2, 3))


def _centre_hist(raw: Any, bins: int) -> Any:
    """Share of the crop centre's pixels in each of ``bins``^3 RGB cells (``raw`` in [0, 1])."""
    c = raw[
        :, :, raw.shape[2] // 4 : raw.shape[2] - raw.shape[2] // 4, raw.shape[3] // 4 : raw.shape[3] - raw.shape[3] // 4
    ]
    return _rgb_hist(c, bins, torch.ones_like(c[:, 0]))


def _rgb_hist(raw: Any, bins: int, weight: Any) -> Any:
    """Weighted share of ``raw``'s pixels (N, 3, H, W in [0, 1]) in each of ``bins``^3 RGB
    cells; ``weight`` (N, H, W) says how much each pixel counts (0: not at all)."""
    q = (raw * bins).long().clamp_(0, bins - 1)
    code = ((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]).flatten(1)
    w = weight.flatten(1).to(raw.dtype)
    hist = torch.zeros(code.shape[0], bins**3, dtype=raw.dtype, device=raw.device)
    hist.scatter_add_(1, code, w)
    return hist / w.sum(1, keepdim=True).clamp_min(1.0)


def _drawn(raw: Any) -> Any:
    """(N, H, W) mask of a crop's drawn pixels: not the exact grey fill around a box."""
    return (raw - CROP_FILL).abs().amax(1) > 0.5 / 255


#: the grey that :func:`pipelines.train.data.square_crop` fills around a box, in [0, 1]
CROP_FILL = 128 / 255


def _fg_hist(raw: Any, bins: int, tau: float) -> Any:
    """Square root of the share of the garment's pixels in each of ``bins``^3 RGB cells.

    The drawn rectangle of each crop (the box; the grey fill left out) has a rim about 3 %
    of the crop wide; its median colour is taken as the backdrop, and the garment's pixels
    are the drawn ones farther than ``tau`` from it in some channel. Where almost nothing
    differs (a garment the colour of its backdrop) every drawn pixel counts.
    """
    n, _, h, w = raw.shape
    drawn = _drawn(raw)
    rows, cols = drawn.any(2), drawn.any(1)
    idx_h = torch.arange(h, device=raw.device)
    idx_w = torch.arange(w, device=raw.device)
    # first and last drawn row / column (a crop with nothing drawn keeps the whole square)
    y0 = torch.where(rows, idx_h, h).amin(1).clamp_max(h - 1).view(n, 1, 1)
    y1 = torch.where(rows, idx_h, -1).amax(1).clamp_min(0).view(n, 1, 1)
    x0 = torch.where(cols, idx_w, w).amin(1).clamp_max(w - 1).view(n, 1, 1)
    x1 = torch.where(cols, idx_w, -1).amax(1).clamp_min(0).view(n, 1, 1)
    r = max(1, round(0.03 * max(h, w)))
    yy, xx = idx_h.view(1, h, 1), idx_w.view(1, 1, w)
    ring = drawn & ((yy < y0 + r) | (yy > y1 - r) | (xx < x0 + r) | (xx > x1 - r))
    px = raw.permute(0, 2, 3, 1).reshape(n, h * w, 3)
    rim = torch.where(ring.reshape(n, h * w, 1), px, torch.full_like(px, float("nan")))
    backdrop = rim.nanmedian(1).values.nan_to_num(CROP_FILL)  # (n, 3)
    fg = drawn & ((raw - backdrop.view(n, 3, 1, 1)).abs().amax(1) > tau)
    few = fg.flatten(1).sum(1) < max(10.0, 0.0025 * h * w)
    return _rgb_hist(raw, bins, torch.where(few.view(n, 1, 1), drawn, fg)).sqrt()


def _content_hist(raw: Any, bins: int) -> Any:
    """Share of the crop's drawn pixels (not the exact crop fill) in each of ``bins``^3 RGB cells."""
    return _rgb_hist(raw, bins, _drawn(raw))


def group_columns(z: Any, groups: Mapping[str, tuple[int, int]], names: Sequence[str]) -> Any:
    """The columns of a descriptor batch ``z`` that the groups ``names`` hold, in that order
    (``groups``: :meth:`Descriptor.groups`); ``z`` itself when they are all of it."""
    if list(names) == list(groups):
        return z
    return torch.cat([z[:, slice(*groups[g])] for g in names], dim=1)


def run_prefix(trunk: Any, x: Any, n_blocks: int, descriptor: Descriptor | None = None, raw: Any = None) -> Any:
    """Stem + the first ``n_blocks`` stages of an EfficientNet-style trunk.

    When ``n_blocks`` exceeds its stages the whole trunk runs and the result is a flat
    descriptor: its pooled features, then what ``descriptor`` asks for (see
    :class:`Descriptor`); ``raw`` is the un-normalised input, for the colour histogram.
    """
    if n_blocks <= 0:
        return x
    if n_blocks > len(trunk.blocks):
        import torch.nn.functional as F

        d = descriptor or Descriptor()
        grid, centre = [], []
        h = trunk.bn1(trunk.conv_stem(x))
        for i, block in enumerate(trunk.blocks):
            h = block(h)
            if i in d.grid_stages:
                grid.append(F.adaptive_avg_pool2d(h, d.grid).flatten(1))
            if i in d.centre_stages:
                centre.append(_centre(h))
        if d.centre_rgb:
            centre.append(_centre(x))
        if d.centre_hist:
            centre.append(_centre_hist(raw if raw is not None else x, d.centre_hist))
        if d.content_hist:
            centre.append(_content_hist(raw if raw is not None else x, d.content_hist))
        pooled = trunk.forward_head(trunk.bn2(trunk.conv_head(h)), pre_logits=True)
        colour = [_fg_hist(raw if raw is not None else x, d.fg_hist, d.fg_tau)] if d.fg_hist else []
        return torch.cat([pooled, *grid, *centre, *colour], dim=1)
    x = trunk.bn1(trunk.conv_stem(x))
    for block in list(trunk.blocks)[:n_blocks]:
        x = block(x)
    return x


def prefix_groups(trunk: Any, n_blocks: int, descriptor: Descriptor) -> dict[str, tuple[int, int]]:
    """Column ranges of the pooled features :func:`run_tail` (or a whole-trunk prefix) yields."""
    if n_blocks <= 0 or not hasattr(trunk, "blocks") or n_blocks <= len(trunk.blocks):
        return {"pooled": (0, int(trunk.num_features))}
    return descriptor.groups(trunk)


def run_tail(trunk: Any, f: Any, n_blocks: int) -> Any:
    """The stages after ``n_blocks``, the head convolution and global pooling: pooled features
    (the whole trunk when nothing is frozen, whatever its architecture)."""
    if n_blocks <= 0:
        return trunk(f)
    if n_blocks > len(trunk.blocks):
        return f
    for block in list(trunk.blocks)[n_blocks:]:
        f = block(f)
    return trunk.forward_head(trunk.bn2(trunk.conv_head(f)), pre_logits=True)


#: Blocks of the Lite0 trunk whose outputs the image models' feature cache stores: the
#: ends of the stride-8 (block 2, 40 channels), stride-16 (block 4, 112 channels) and
#: stride-32 (block 6, 320 channels) stages. The detector and the parser read their frozen
#: prefix from it (``freeze_blocks`` 3, 5 or 7).
SCENE_BLOCKS: tuple[int, ...] = (2, 4, 6)


def out_blocks(trunk: Any) -> list[int]:
    """Indices of the blocks whose outputs a timm ``features_only`` EfficientNet returns."""
    return [int(name.split(".")[1]) for name in trunk.feature_info.module_name()]


def scene_maps(trunk: Any, x: Any, blocks: tuple[int, ...] = SCENE_BLOCKS) -> dict[int, Any]:
    """``{block: output}`` of an EfficientNet-style trunk for the ``blocks`` asked for (the
    stem and every block up to the last of them run; ``x`` normalised)."""
    out = {}
    h = trunk.bn1(trunk.conv_stem(x))
    for i, block in enumerate(list(trunk.blocks)[: max(blocks) + 1]):
        h = block(h)
        if i in blocks:
            out[i] = h
    return out


def tail_maps(trunk: Any, cached: Mapping[int, Any], n_blocks: int) -> list[Any]:
    """What ``trunk`` (``features_only``) returns, computed from the cached outputs of its
    frozen prefix: outputs of blocks below ``n_blocks`` come from ``cached``, the stages
    from ``n_blocks`` on run on ``cached[n_blocks - 1]``."""
    outs = out_blocks(trunk)
    missing = sorted({i for i in outs if i < n_blocks} - set(cached) | ({n_blocks - 1} - set(cached)))
    if missing:
        raise KeyError(f"the cache holds blocks {sorted(cached)}, the model needs {missing}")
    res = [cached[i] for i in outs if i < n_blocks]
    h = cached[n_blocks - 1]
    for i in range(n_blocks, max(outs) + 1):
        h = trunk.blocks[i](h)
        if i in outs:
            res.append(h)
    return res


def normalise(x):
    """Normalise a float batch in [0, 1] (N, 3, H, W) with the ImageNet statistics."""
    import torch

    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


#: (conv, norm) attribute pairs of timm's EfficientNet modules, per class name
_CONV_NORM_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "EfficientNet": (("conv_stem", "bn1"), ("conv_head", "bn2")),
    "EfficientNetFeatures": (("conv_stem", "bn1"),),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


class _ActOnly(torch.nn.Module):
    """What is left of a folded ``BatchNormAct2d``: its dropout and activation."""

    def __init__(self, drop: torch.nn.Module, act: torch.nn.Module) -> None:
        super().__init__()
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every batch-norm that follows a convolution in timm EfficientNet modules into
    that convolution (in place; inference only, eval mode required) and return ``model``.

    Batch-norm is a per-channel affine map at inference, so the folded convolution computes
    the same function with one pass over the activations instead of two: about a quarter
    of the frozen trunk's CPU time went to batch-norm.
    """
    if model.training:
        raise ValueError("fold_batchnorm is for inference: put the model in eval mode first")
    from torch import nn

    with torch.no_grad():
        for module in list(model.modules()):
            for conv_name, bn_name in _CONV_NORM_PAIRS.get(type(module).__name__, ()):
                conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
                if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                    continue
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
                drop, act = getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity())
                setattr(module, bn_name, _ActOnly(drop, act))
    return model


def same_frozen_prefix(a: Any, b: Any) -> bool:
    """Whether two crop models (tagger, embedder) compute the same :meth:`prefix`: both
    freeze their whole trunk, read the same :class:`Descriptor`, and hold identical trunk weights. Then
    one trunk pass per crop serves both (the service and the catalog index rely on this)."""
    if not all(hasattr(m, "prefix") and hasattr(m, "trunk") for m in (a, b)):
        return False
    n = len(getattr(a.trunk, "blocks", ()))
    if not (a.freeze_blocks > n and b.freeze_blocks > n and a.descriptor == b.descriptor):
        return False
    sa, sb = a.trunk.state_dict(), b.trunk.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def inference_ready(model: Any) -> Any:
    """``model`` in eval mode, batch-norm folded, with NHWC (channels-last) weights, the layout every served or
    indexing forward pass uses. On CPU it lets oneDNN pick its blocked convolution kernels:
    the demo detector's backbone ran 1.1x faster per photo alone and 1.3x in batches of 8.
    The search service and the index's catalog crops both load models through here, so a
    catalog photo is cropped with the same kernels whether it is indexed or searched."""
    import torch

    # batch-norm folded into the convolutions: the same function, one pass fewer
    return fold_batchnorm(model.eval()).to(memory_format=torch.channels_last)
