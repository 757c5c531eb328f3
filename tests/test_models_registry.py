import pytest

import models


def test_register_create_and_list() -> None:
    @models.register("_probe")
    def build(cfg):
        return ("probe", cfg["width"])

    assert "_probe" in models.list_models()
    assert models.create("_probe", {"width": 3}) == ("probe", 3)
    with pytest.raises(ValueError, match="already registered"):
        models.register("_probe")(lambda cfg: None)
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        models.create("nope")
    models._REGISTRY.pop("_probe")
