"""Plain 2-D ResNets with torchvision's names and sizes; the 2-D backbone registry."""

from __future__ import annotations

import pytest
import torch

from tada.models import create_image_model, list_image_models
from tada.models.image import BasicBlock, Bottleneck, image_resnet


def _meta(name, **kwargs):
    with torch.device("meta"):
        return create_image_model(name, **kwargs)


@pytest.mark.parametrize("name, params", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                          ("resnet50", 25_557_032)])
def test_torchvision_layouts_have_torchvision_sizes_and_names(name, params):
    model = _meta(name)
    assert sum(p.numel() for p in model.parameters()) == params  # torchvision's counts, 1000 classes
    keys = set(model.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.bias", "fc.weight", "fc.bias"} <= keys
    assert ("layer4.2.conv3.weight" in keys) == (name == "resnet50")


def test_timm_contract_and_classifier_reset():
    torch.manual_seed(0)
    model = create_image_model("resnet10_w16", num_classes=5, drop_rate=0.2).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 128, 1, 1)
    torch.testing.assert_close(model(x), model.forward_head(feats))
    assert model.forward_head(feats, pre_logits=True).shape == (2, 128) and model.num_features == 128
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)


def test_registry_and_errors():
    assert {"resnet18", "resnet50", "resnet10_w16"} <= set(list_image_models())
    with pytest.raises(KeyError, match="did you mean"):
        create_image_model("resnet5O")
    with pytest.raises(ValueError, match="widths one longer"):
        image_resnet(layers=(1, 1), widths=(8, 8))
    with pytest.raises(TypeError, match="block class"):
        image_resnet(block="basic", layers=(1, 1), widths=(8, 8, 16))
    zero = image_resnet(block=BasicBlock, layers=(1, 1), widths=(8, 8, 16), zero_init_residual=True)
    assert float(zero.layer1[0].bn2.weight.detach().abs().sum()) == 0.0
    zero = image_resnet(block=Bottleneck, layers=(1, 1), widths=(8, 8, 16), zero_init_residual=True)
    assert float(zero.layer2[0].bn3.weight.detach().abs().sum()) == 0.0
    assert float(zero.layer2[0].bn2.weight.detach().abs().sum()) > 0.0
