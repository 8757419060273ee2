"""TAdaConvNeXtV2 from the official configs: schema keys, the ConvNeXt adapter, size overrides, FLOPs,
and `tada train` refusing the recipe keys it does not implement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tada.config import ConfigError, load_config
from tada.models import build_model, create_model, get_weights, list_weights
from tada.models.convnext import ConvNeXtBlock, TAdaConvNeXtV2Block, VideoConvNeXt
from tada.models.flops import count_model

REPO = Path(__file__).resolve().parents[2]
PROJECTS = REPO / "configs" / "projects" / "tadaconvnextv2"


def _cfg(size: str, dataset: str, overrides=None):
    return load_config(PROJECTS / f"tadaconvnextv2_{size}_{dataset}_16f.yaml", overrides=overrides)


def _meta(cfg):
    with torch.device("meta"):
        return build_model(cfg)


@pytest.mark.parametrize(
    "size, dataset, params, classes, drop_path",
    [
        ("tiny", "k400", 45_971_488, 400, 0.2), ("tiny", "ssv2", 45_797_694, 174, 0.3),
        ("small", "k400", 82_249_120, 400, 0.4), ("small", "ssv2", 82_075_326, 174, 0.5),
        ("base", "k400", 145_687_632, 400, 0.6), ("base", "ssv2", 145_455_982, 174, 0.6),
    ],
)
def test_official_configs_build_the_official_networks(size, dataset, params, classes, drop_path):
    cfg = _cfg(size, dataset)
    model = _meta(cfg)
    assert isinstance(model, VideoConvNeXt)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.num_classes == classes and model.head.dropout_rate == 0.5
    blocks = [b for s in model.backbone.stages for b in s]
    assert all(isinstance(b, TAdaConvNeXtV2Block) for b in blocks)
    assert blocks[0].drop_path == 0.0 and blocks[-1].drop_path == pytest.approx(drop_path)


def test_recipe_values_of_the_official_configs():
    t = _cfg("tiny", "k400")
    assert (t.OPTIMIZER.BASE_LR, t.OPTIMIZER.WARMUP_START_LR, t.OPTIMIZER.MAX_EPOCH, t.OPTIMIZER.WARMUP_EPOCHS) == (
        5e-4, 1e-6, 100, 8.0)
    assert (t.DATA.SAMPLING_MODE, t.DATA.SAMPLING_RATE, t.DATA.NUM_INPUT_FRAMES) == ("interval_based", 5, 16)
    assert (t.DATA.TEST_SCALE, t.DATA.TEST_CROP_SIZE, t.TRAIN.BATCH_SIZE) == (256, 256, 128)
    assert t.VIDEO.BACKBONE.LARGE_SCALE_INIT_VALUE == 1e-6 and t.VIDEO.BACKBONE.BRANCH.HEAD_DIM == 48
    s = _cfg("base", "ssv2")
    assert (s.OPTIMIZER.BASE_LR, s.OPTIMIZER.MAX_EPOCH, s.OPTIMIZER.WARMUP_EPOCHS, s.DATA.SAMPLING_MODE) == (
        2.5e-4, 64, 2.5, "segment_based")
    assert s.VIDEO.BACKBONE.BRANCH.HEAD_DIM == 64 and s.OPTIMIZER.NEW_PARAMS == ["dwconv_rf", "norm_avgpool"]


def test_size_overrides_build_the_matching_smaller_model():
    cfg = _cfg("base", "k400", [
        "VIDEO.BACKBONE.DEPTH", "[1, 1, 2, 1]", "VIDEO.BACKBONE.NUM_FILTERS", "[16, 32, 64, 128]",
        "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "VIDEO.BACKBONE.BRANCH.HEAD_DIM", "8",
        "VIDEO.HEAD.NUM_CLASSES", "5", "DATA.NUM_INPUT_FRAMES", "6", "DATA.TEST_CROP_SIZE", "64",
    ])
    model = build_model(cfg).eval()
    want = create_model("tadaconvnextv2_base", num_classes=5, depths=(1, 1, 2, 1), widths=(16, 32, 64, 128), head_dim=8)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in want.state_dict().items()}
    assert [len(s) for s in model.backbone.stages] == [1, 1, 2, 1]
    assert [b.dwconv_rf.heads for s in model.backbone.stages for b in s] == [1, 2, 4, 4, 8]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 6, 64, 64)).shape == (1, 5)
    plain = build_model(load_config(PROJECTS / "tadaconvnextv2_tiny_k400_16f.yaml", overrides=[
        "VIDEO.BACKBONE.BRANCH.NAME", "ConvNeXtBlock", "VIDEO.BACKBONE.DEPTH", "[1, 1, 1, 1]"]))
    assert all(isinstance(b, ConvNeXtBlock) for s in plain.backbone.stages for b in s)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["VIDEO.BACKBONE.DEPTH", "50"], "four positive block counts"),
        (["VIDEO.BACKBONE.NUM_FILTERS", "[96, 192, 384]"], "four stage widths"),
        (["VIDEO.BACKBONE.NUM_OUT_FEATURES", "512"], "NUM_OUT_FEATURES"),
        (["VIDEO.BACKBONE.BRANCH.HEAD_DIM", "64"], "multiple of head_dim"),
        (["VIDEO.BACKBONE.BRANCH.NAME", "TAda2DBlock"], "not a ConvNeXt block"),
        (["VIDEO.BACKBONE.DROP_PATH", "1.0"], "DROP_PATH"),
        (["VIDEO.HEAD.ACTIVATION", "sigmoid"], "VIDEO.HEAD.ACTIVATION"),
    ],
)
def test_bad_convnext_settings_are_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        _meta(_cfg("tiny", "k400", overrides))


@pytest.mark.parametrize(
    "key, value", [("VIDEO.BACKBONE.BRANCH.HEAD_DIM", "4.5"), ("VIDEO.BACKBONE.DROP_PATH", "high"),
                   ("VIDEO.BACKBONE.STEM.T_STRIDE", "[2]"), ("OPTIMIZER.OPTIM_METHOD", "lamb")],
)
def test_new_keys_are_type_checked(key, value):
    with pytest.raises(ConfigError, match=key.split(".")[-1]):
        _cfg("tiny", "k400", [key, value])


@pytest.mark.parametrize("size, test_gmacs, train_gmacs",
                         [("tiny", 47.0, 36.0), ("small", 91.3, 70.0), ("base", 161.3, 123.6)])
def test_flops_per_view_are_the_official_table(size, test_gmacs, train_gmacs):
    """MACs per 16x256x256 test view: the official model zoo's 47 / 91 / 162 "GFLOPs"."""
    stats = count_model(_cfg(size, "k400"))
    assert round(stats["gmacs_test_view"], 1) == test_gmacs
    assert round(stats["gmacs_train_view"], 1) == train_gmacs
    quoted = get_weights(f"tadaconvnextv2_{size}.k400_16f").extra["gflops_per_view"]
    assert abs(stats["gmacs_test_view"] - quoted) < 1.0  # the zoo's figures: 47 / 91 / 162


def test_zoo_entries():
    names = [n for n in list_weights() if n.startswith("tadaconvnextv2_")]
    assert len(names) == 14
    t = get_weights("tadaconvnextv2_tiny.k400_16f")
    assert (t.num_classes, t.num_frames, t.sampling_mode, t.sampling_rate, t.views, t.top1, t.top5) == (
        400, 16, "interval_based", 5, (4, 3), 79.6, None)
    assert (t.test_scale, t.test_crop, t.mean, t.std, t.init) == (256, 256, (0.45,) * 3, (0.225,) * 3, "in1k")
    b = get_weights("tadaconvnextv2_base.ssv2_in21k_32f")
    assert (b.num_classes, b.num_frames, b.views, b.top1, b.init) == (174, 32, (2, 3), 71.1, "in21k+k400")
    assert b.extra == {"gflops_per_view": 324, "overrides": ["DATA.NUM_INPUT_FRAMES", "32"]}
    for name in names:
        entry = get_weights(name)
        cfg = load_config(REPO / entry.config, overrides=entry.extra.get("overrides"))
        assert cfg.DATA.NUM_INPUT_FRAMES == entry.num_frames and cfg.VIDEO.HEAD.NUM_CLASSES == entry.num_classes
        assert cfg.MODEL.NAME.lower().endswith(entry.model.split("_")[1])
    assert create_model("tadaconvnextv2_tiny.ssv2_16f", depths=(1, 1, 1, 1)).num_classes == 174


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
@pytest.mark.parametrize("dataset", ["k400", "ssv2"])
def test_the_official_recipes_are_all_implemented(size, dataset):
    """Every key the official TAdaConvNeXtV2 project configs set is one the engine honours."""
    from tada.config.schema import unimplemented_settings
    from tada.engine.trainer import check_train_config

    cfg = _cfg(size, dataset)
    assert unimplemented_settings(cfg) == []
    check_train_config(cfg, 1)
    assert cfg.OPTIMIZER.OPTIM_METHOD == "adamw" and cfg.AUGMENTATION.AUTOAUGMENT.ENABLE


def test_convnext_keys_on_a_resnet_config_are_errors():
    k400 = REPO / "configs" / "projects" / "tada" / "k400" / "tada2d_8x8.yaml"
    _meta(load_config(k400))  # the defaults are fine
    for key, value in (("VIDEO.BACKBONE.DROP_PATH", "0.1"), ("VIDEO.BACKBONE.BRANCH.HEAD_DIM", "64")):
        with pytest.raises(ConfigError, match=f"{key} is a ConvNeXt setting"):
            _meta(load_config(k400, [key, value]))
