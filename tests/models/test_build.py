"""build_model(cfg): the one config adapter; the zoo table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tada.config import load_config
from tada.models import ZOO, build_model, create_model, get_weights, list_weights
from tada.models.resnet import Base2DBlock, TAda2DBlock

REPO = Path(__file__).resolve().parents[2]
K400 = REPO / "configs" / "projects" / "tada" / "k400" / "tada2d_8x8.yaml"
SSV2 = REPO / "configs" / "projects" / "tada" / "ssv2" / "tada2d_8f.yaml"
TSN = REPO / "configs" / "pool" / "backbone" / "tsn.yaml"

pytestmark = pytest.mark.skipif(not K400.is_file(), reason="zoo configs not present")


def _meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


def test_zoo_configs_build_the_official_networks():
    k400 = _meta(load_config(K400))
    reference = {k: tuple(v.shape) for k, v in _meta_model("tada2d_r50", 400).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in k400.state_dict().items()} == reference
    assert k400.channels_last is True  # TRAIN.CHANNELS_LAST default
    assert k400.head.dropout.p == 0.5
    ssv2 = _meta(load_config(SSV2))
    assert ssv2.num_classes == 174
    assert isinstance(ssv2.backbone.conv3.res_1.conv_branch, TAda2DBlock)


def _meta_model(name, classes):
    with torch.device("meta"):
        return create_model(name, num_classes=classes)


def test_config_values_reach_the_modules():
    cfg = load_config(K400, overrides=[
        "BN.EPS", "1e-3", "BN.MOMENTUM", "0.05", "VIDEO.HEAD.DROPOUT_RATE", "0.0", "TRAIN.CHANNELS_LAST", "false",
        "VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_R", "8", "VIDEO.BACKBONE.BRANCH.POOL_K", "[5, 1, 1]",
        "VIDEO.BACKBONE.NUM_FILTERS", "[16, 64, 128, 256, 512]", "VIDEO.BACKBONE.NUM_OUT_FEATURES", "512",
        "VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.TADA_INIT", "official",
    ])
    model = _meta(cfg)
    block = model.backbone.conv2.res_1.conv_branch
    assert block.a_bn.eps == 1e-3 and block.a_bn.momentum == 0.05
    assert block.b_rf.bn.eps == 1e-3  # the routing BN follows the config too (the official one ignores it)
    assert block.b_rf.a.weight.shape == (2, 16, 3, 1, 1)
    assert block.b_avgpool.kernel_size == 5
    assert model.channels_last is False and isinstance(model.head.dropout, torch.nn.Identity)
    assert len(model.backbone.conv4._modules) == 2  # depth 26


def test_tsn_backbone_file_gives_plain_blocks():
    cfg = load_config(TSN)
    assert cfg.VIDEO.BACKBONE.BRANCH.NAME == "Base2DBlock"
    model = _meta(cfg)
    assert isinstance(model.backbone.conv5.res_3.conv_branch, Base2DBlock)
    assert sum(p.numel() for p in model.backbone.parameters()) == 23_508_032


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["VIDEO.BACKBONE.DOWNSAMPLING_TEMPORAL", "[true, false, false, false, false]"], "DOWNSAMPLING_TEMPORAL"),
        (["VIDEO.BACKBONE.NONLOCAL.ENABLE", "true"], "NONLOCAL"),
        (["VIDEO.BACKBONE.STEM.NAME", "R2Plus1DStem"], "STEM.NAME"),
        (["VIDEO.BACKBONE.NUM_OUT_FEATURES", "1024"], "NUM_OUT_FEATURES"),
        (["VIDEO.BACKBONE.BRANCH.POOL_K", "[3, 3, 3]"], "POOL_K"),
        (["VIDEO.BACKBONE.KERNEL_SIZE", "[[1, 7, 7], [3, 3, 3], [1, 3, 3], [1, 3, 3], [1, 3, 3]]"], "temporal kernel"),
        (["VIDEO.HEAD.NAME", "MViTHead"], "VIDEO.HEAD.NAME='MViTHead' \\(tada supports only 'BaseHead'\\)"),
        (["VIDEO.HEAD.ACTIVATION", "sigmoid"], "VIDEO.HEAD.ACTIVATION"),
        (["BN.FREEZE", "true"], "BN.FREEZE"),
        (["BN.WB_LOCK", "true"], "BN.WB_LOCK"),
    ],
)
def test_unsupported_settings_are_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        _meta(load_config(K400, overrides=overrides))


def test_zoo_table():
    assert list_weights() == sorted(ZOO) and len([n for n in ZOO if n.startswith("tada2d_r50.")]) == 4

    e = get_weights("tada2d_r50.k400_8x8")
    assert (e.num_frames, e.sampling_rate, e.views, e.top1, e.top5) == (8, 8, (10, 3), 76.7, 92.6)
    assert (e.test_scale, e.test_crop, e.mean, e.std) == (256, 256, (0.45,) * 3, (0.225,) * 3)
    ssv2 = get_weights("tada2d_r50.ssv2_16f")
    assert (ssv2.num_classes, ssv2.sampling_mode, ssv2.views, ssv2.top1) == (174, "segment_based", (2, 3), 65.6)
    for entry in ZOO.values():
        assert (REPO / entry.config).is_file(), entry.config
        assert entry.as_dict()["name"] == entry.name
    with pytest.raises(KeyError, match="known"):
        get_weights("tada2d_r50.imagenet")


def test_every_unimplemented_key_exists_with_the_honoured_default():
    from tada.config.schema import NOT_IMPLEMENTED, unimplemented_settings

    cfg = load_config(K400)
    for key, default in NOT_IMPLEMENTED.items():
        assert cfg.get(key) == default, key
    assert unimplemented_settings(cfg) == []
