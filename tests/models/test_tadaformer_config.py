"""TAdaFormer from the official configs: sizes, overrides to small models, GMACs, recipe keys at train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tada.config import ConfigError, load_config
from tada.engine.trainer import check_train_config
from tada.models import build_model, create_model, model_kwargs_from_cfg
from tada.models.flops import count_model
from tada.models.tadaformer import TAdaBlock, TAdaBlockTempEnhanced, TAdaFormer

PROJECTS = Path(__file__).resolve().parents[2] / "configs" / "projects" / "tadaformer"
SMALL_OVERRIDES = [
    "VIDEO.BACKBONE.DEPTH", "2", "VIDEO.BACKBONE.NUM_FEATURES", "256", "VIDEO.BACKBONE.NUM_OUT_FEATURES", "256",
    "VIDEO.BACKBONE.NUM_HEADS", "4", "VIDEO.BACKBONE.PATCH_SIZE", "8", "VIDEO.BACKBONE.INPUT_RES", "32",
    "DATA.NUM_INPUT_FRAMES", "8",
]


@pytest.mark.parametrize(
    "name, params, gmacs, model, kwargs",
    [
        ("tadaformer_b16_k400_16f", 104_195_728, 153.6, "tadaformer_b16", dict(num_classes=400)),
        ("tadaformer_b16_ssv2_16f", 135_086_766, 187.0, "tadaformer_b16",
         dict(num_classes=174, temp_enhance=True, double_tada=True)),
        ("tadaformer_l14_k400_16f", 364_827_024, 702.6, "tadaformer_l14", dict(num_classes=400)),
        ("tadaformer_l14_ssv2_16f", 474_960_046, 857.7, "tadaformer_l14",
         dict(num_classes=174, temp_enhance=True, double_tada=True)),
    ],
)
def test_official_configs_build_the_official_models_and_gmacs(name, params, gmacs, model, kwargs):
    cfg = load_config(PROJECTS / f"{name}.yaml")
    stats = count_model(cfg)  # on the meta device
    assert stats["params"] == params
    assert round(stats["gmacs_test_view"], 1) == gmacs
    with torch.device("meta"):
        built, registered = build_model(cfg), create_model(model, **kwargs)
    registered_shapes = {k: v.shape for k, v in registered.state_dict().items()}
    assert {k: v.shape for k, v in built.state_dict().items()} == registered_shapes


def test_overrides_build_the_matching_small_model_and_it_runs():
    cfg = load_config(PROJECTS / "tadaformer_b16_ssv2_16f.yaml", overrides=SMALL_OVERRIDES)
    model = build_model(cfg)
    assert isinstance(model, TAdaFormer) and model.num_classes == 174
    assert len(model.backbone.layers) == 2 and model.backbone.positional_embedding.shape == (17, 256)
    assert model.backbone.conv1.weight.shape == (256, 3, 3, 8, 8)
    block = model.backbone.layers[1]
    assert isinstance(block.tada, TAdaBlockTempEnhanced) and isinstance(block.tada2, TAdaBlockTempEnhanced)
    assert block.attn.num_heads == 4 and block.tada.tadaconv.num_frames == 4
    assert block.drop_path.drop_prob == 0.0 and model.head.dropout.p == 0.5
    reference = create_model("tadaformer_b16", num_classes=174, width=256, depth=2, heads=4, patch_size=8,
                             input_res=32, num_frames=8, temp_enhance=True, double_tada=True)
    reference_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == reference_shapes
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 174)


def test_config_values_reach_the_modules():
    cfg = load_config(PROJECTS / "tadaformer_l14_ssv2_16f.yaml", overrides=SMALL_OVERRIDES + [
        "VIDEO.BACKBONE.TEMP_ENHANCE", "false", "VIDEO.BACKBONE.DOUBLE_TADA", "false",
        "VIDEO.BACKBONE.ATTN_DROPOUT", "0.1", "VIDEO.BACKBONE.TUBLET_STRIDE", "1", "VIDEO.BACKBONE.REDUCTION", "1",
        "VIDEO.HEAD.DROPOUT_RATE", "0.0", "VIDEO.BACKBONE.REQUIRE_PROJ", "true", "VIDEO.HEAD.OUTPUT_DIM", "32",
        "VIDEO.BACKBONE.NUM_OUT_FEATURES", "32",
    ])
    kwargs = model_kwargs_from_cfg(cfg)
    assert kwargs["drop_path"] == 0.2 and kwargs["output_dim"] == 32
    model = build_model(cfg)
    blocks = model.backbone.layers
    assert type(blocks[0].tada) is TAdaBlock and blocks[0].tada2 is None
    assert blocks[0].drop_path.drop_prob == 0.0 and blocks[1].drop_path.drop_prob == pytest.approx(0.2)
    assert blocks[0].attn.dropout == 0.1 and blocks[0].tada.tadaconv.in_channels == 256
    assert blocks[0].tada.tadaconv.num_frames == 8 and model.backbone.proj.shape == (256, 32)
    assert model.head.out.in_features == 32


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["VIDEO.BACKBONE.NUM_OUT_FEATURES", "512"], "NUM_OUT_FEATURES"),
        (["VIDEO.BACKBONE.BRANCH.NAME", "TAda2DBlock"], "TAdaFormerBlock"),
        (["VIDEO.BACKBONE.NUM_FEATURES", "128", "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128"], "head size 64"),
        (["VIDEO.BACKBONE.NUM_HEADS", "5"], "heads"),
    ],
)
def test_bad_backbone_settings_name_the_config(overrides, match):
    cfg = load_config(PROJECTS / "tadaformer_b16_k400_16f.yaml", overrides=SMALL_OVERRIDES + overrides)
    with pytest.raises(ConfigError, match=match):
        with torch.device("meta"):
            build_model(cfg)


@pytest.mark.parametrize("name", ["b16_k400", "b16_ssv2", "l14_k400", "l14_ssv2"])
def test_the_official_recipes_are_all_implemented(name):
    """Every key the official TAdaFormer project configs set is one the engine honours."""
    from tada.config.schema import unimplemented_settings

    cfg = load_config(PROJECTS / f"tadaformer_{name}_16f.yaml")
    assert unimplemented_settings(cfg) == []
    check_train_config(cfg, world_size=1)


def test_the_real_b16_gets_the_layer_wise_decay_groups():
    """The official B/16 K400 config's model and optimizer: AdamW over 53 groups covering every
    parameter, rates from 0.7^13 (the embeddings) to 10x (the head)."""
    from tada.engine.optim import build_optimizer

    cfg = load_config(PROJECTS / "tadaformer_b16_k400_16f.yaml")
    opt = build_optimizer(build_model(cfg), cfg.OPTIMIZER, cfg.BN,
                          lr_reduce=cfg.TRAIN.LR_REDUCE and cfg.TRAIN.FINE_TUNE,
                          num_layers=cfg.VIDEO.BACKBONE.DEPTH)
    assert type(opt).__name__ == "AdamW" and len(opt.param_groups) == 53
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 104_195_728
    mults = [g["lr_mult"] for g in opt.param_groups]
    assert min(mults) == pytest.approx(0.7 ** 13) and max(mults) == 10.0
