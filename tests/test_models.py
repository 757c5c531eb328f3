"""Model smoke tests: one parametrised test over every registered model (timm-style)."""

from __future__ import annotations

import sys

import pytest
import torch

import models

torch.set_num_threads(2)

TINY = {
    "detector": {"categories": ["a", "b", "c"], "image_size": 128, "fpn_channels": 32},
    "parser": {"classes": ["bg", "skin", "hair", "top"], "psp_channels": 32},
    "tagger": {"heads": {"category": ["a", "b", "c"], "color": ["red", "blue"]}},
    "embedder": {"dim": 16},
}


def test_import_models_is_light() -> None:
    """``import models`` must not pull torch-heavy model modules before they are needed."""
    import subprocess

    code = "import sys, models; print('models.detector' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_builtin_models_registered() -> None:
    assert {"detector", "parser", "tagger", "embedder"} <= set(models.list_models())


@pytest.mark.parametrize("name", [n for n in models.list_models() if not n.startswith("_")])
def test_smoke_forward(name: str) -> None:
    """Build with a tiny config, run one forward pass and check the output contract."""
    torch.manual_seed(0)
    model = models.create(name, TINY.get(name, {}))
    assert sum(p.numel() for p in model.parameters()) > 0
    model.eval()
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        if name == "detector":
            out = model(list(x))
            assert len(out) == 2
            for det in out:
                assert det["boxes"].shape[1] == 4 and det["boxes"].shape[0] == det["scores"].shape[0]
                assert det["labels"].shape == det["scores"].shape
                assert det["labels"].numel() == 0 or int(det["labels"].max()) <= 3
            model.train()
            losses = model(
                list(x), [{"boxes": torch.tensor([[2.0, 3.0, 30.0, 40.0]]), "labels": torch.tensor([1])}] * 2
            )
            assert {"classification", "bbox_regression"} <= set(losses)
        elif name == "parser":
            y = model(x)
            assert y.shape == (2, 4, 64, 48)
        elif name == "tagger":
            y = model(x)
            assert set(y) == {"category", "color"}
            assert y["category"].shape == (2, 3) and y["color"].shape == (2, 2)
        elif name == "embedder":
            y = model(x)
            assert y.shape == (2, 16)
            assert torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-5)
    # weights round-trip through a state dict (how the lead saves / load_model rebuilds)
    clone = models.create(name, TINY.get(name, {}))
    clone.load_state_dict(model.state_dict())


def test_masked_cross_entropy_ignores_missing_labels() -> None:
    from models.tagger import masked_cross_entropy

    logits = {"a": torch.tensor([[5.0, 0.0], [0.0, 5.0]]), "b": torch.tensor([[0.0, 0.0], [0.0, 0.0]])}
    known = masked_cross_entropy(logits, {"a": torch.tensor([0, 1]), "b": torch.tensor([-1, -1])})[0]
    only_a = masked_cross_entropy({"a": logits["a"]}, {"a": torch.tensor([0, 1])})[0]
    assert torch.isclose(known, only_a)  # head b with no known label contributes nothing
    half = masked_cross_entropy({"a": logits["a"]}, {"a": torch.tensor([0, -1])})[0]
    assert half.item() < 0.01  # the masked sample (which would be wrong) is not counted
