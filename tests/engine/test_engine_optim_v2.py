"""The TAdaConvV2 recipes' optimizer: AdamW, the ConvNeXt groups with LR_REDUCE, layer-wise decay
for TAdaFormer, cosine_v2 and label smoothing, against the official tables and formulas."""

import math

import pytest
import torch
from engine_standins import REPO
from v2_standins import NamedParameters, convnext_shapes, tadaformer_shapes

from tada.config import load_config
from tada.engine.optim import GROUP_NAMES, build_optimizer, layer_id, lr_from_config, param_groups, set_lr

K400 = REPO / "configs" / "projects" / "tada" / "k400" / "tada2d_8x8.yaml"


def v2_optimizer_cfg(*extra):
    """The official TAdaConvNeXtV2-T K400 optimizer keys over the TAda2D chain."""
    return load_config(K400, ["OPTIMIZER.OPTIM_METHOD", "adamw", "OPTIMIZER.BASE_LR", "5e-4",
                              "OPTIMIZER.WEIGHT_DECAY", "0.02", "OPTIMIZER.WARMUP_START_LR", "1e-6",
                              "OPTIMIZER.MAX_EPOCH", "100", "OPTIMIZER.WARMUP_EPOCHS", "8",
                              "OPTIMIZER.HEAD_LRMULT", "10", "OPTIMIZER.NEW_PARAMS", "[dwconv_rf, norm_avgpool]",
                              "OPTIMIZER.NEW_PARAMS_MULT", "10", "TRAIN.LR_REDUCE", "true", *extra])


def test_convnext_tiny_groups_match_the_official_table():
    cfg = v2_optimizer_cfg()
    model = NamedParameters(convnext_shapes())
    assert sum(p.numel() for p in model.parameters()) == 45_971_488
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN, lr_reduce=True, num_layers=50)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["name"] for g in opt.param_groups] == list(GROUP_NAMES)
    assert [len(g["params"]) for g in opt.param_groups] == [74, 0, 108, 108, 80, 62, 1, 1, 0]
    assert [sum(p.numel() for p in g["params"]) for g in opt.param_groups] == [
        28_032, 0, 12_945_888, 4_875_408, 27_772_608, 41_952, 307_200, 400, 0]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.0, 0.02, 0.0, 0.02, 0.0, 0.02, 0.0, 0.0]
    # LR_REDUCE with FINE_TUNE: x5 routing/head weights, x10 their biases; HEAD_LRMULT/NEW_PARAMS unread.
    assert [g["lr_mult"] for g in opt.param_groups] == [1, 1, 5, 10, 1, 1, 5, 10, 1]
    g = opt.param_groups[0]
    assert g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8
    set_lr(opt, 2e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-4 * m for m in [1, 1, 5, 10, 1, 1, 5, 10, 1]])


def test_convnext_substring_rules_keep_the_official_surprises():
    model = NamedParameters(convnext_shapes(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=3))
    groups = param_groups(model.named_parameters(), weight_decay=0.02, lr_reduce=True)
    group_of = {id(p): g["name"] for g in groups for p in g["params"]}
    name_group = {n: group_of[id(p)] for n, p in model.named_parameters()}
    assert name_group["backbone.stages.0.0.dwconv_rf.b_bias.weight"] == "rf_bias"  # counts as a bias
    assert name_group["backbone.stages.0.0.dwconv_rf.norm.weight"] == "rf_weight"  # rf LN weight: decayed
    assert name_group["backbone.downsample_layers.0.1.weight"] == "weight"  # index-named LN: decayed
    assert name_group["backbone.stages.0.0.gamma"] == "weight"
    assert name_group["backbone.stages.0.0.norm_avgpool.weight"] == "bn"  # x1, not NEW_PARAMS' x10
    assert name_group["backbone.stages.0.0.dwconv.bias"] == "bias"


def test_without_lr_reduce_every_group_has_multiplier_one():
    model = NamedParameters(convnext_shapes(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=3))
    groups = param_groups(model.named_parameters(), weight_decay=0.02)
    assert all(g["lr_mult"] == 1.0 for g in groups)
    with pytest.raises(ValueError, match="BIAS_DOUBLE"):
        param_groups(model.named_parameters(), weight_decay=0.02, lr_reduce=True, bias_double=True)


def tadaformer_cfg(decay="0.7"):
    return load_config(K400, ["OPTIMIZER.OPTIM_METHOD", "adamw", "OPTIMIZER.WEIGHT_DECAY", "0.05",
                              "OPTIMIZER.LAYER_WISE_LR_DECAY", decay, "OPTIMIZER.HEAD_LRMULT", "10",
                              "OPTIMIZER.NEW_PARAMS", "[tada]", "OPTIMIZER.NEW_PARAMS_MULT", "10",
                              "VIDEO.BACKBONE.DEPTH", "12"])


def test_tadaformer_b16_layer_wise_groups_match_the_official_values():
    cfg = tadaformer_cfg()
    model = NamedParameters(tadaformer_shapes(width=32))
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN, num_layers=cfg.VIDEO.BACKBONE.DEPTH)
    assert isinstance(opt, torch.optim.AdamW)
    assert len(opt.param_groups) == 53
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    mult = {n: by_param[id(p)]["lr_mult"] for n, p in model.named_parameters()}
    wd = {n: by_param[id(p)]["weight_decay"] for n, p in model.named_parameters()}
    for name in ("backbone.class_embedding", "backbone.positional_embedding", "backbone.conv1.weight",
                 "backbone.ln_pre.bias"):
        assert mult[name] == pytest.approx(0.7 ** 13) == pytest.approx(0.0096889, abs=1e-7)
    for i in range(12):
        assert mult[f"backbone.layers.{i}.mlp.c_fc.weight"] == pytest.approx(0.7 ** (12 - i))
        assert mult[f"backbone.layers.{i}.tada.tadaconv.weight"] == pytest.approx(10 * 0.7 ** (12 - i))
        assert mult[f"backbone.layers.{i}.tada.tadaconv.rf_func.b_bias.weight"] == pytest.approx(10 * 0.7 ** (12 - i))
    assert mult["backbone.layers.0.tada.tada_proj.weight"] == pytest.approx(0.1384, abs=1e-4)
    assert mult["backbone.layers.11.tada.tada_proj.weight"] == pytest.approx(7.0)
    assert mult["backbone.ln_post.weight"] == 1.0
    assert mult["head.out.weight"] == mult["head.out.bias"] == 10.0
    # Weight decay: none for 1-D tensors or '.bias' names, WEIGHT_DECAY otherwise.
    assert wd["backbone.layers.3.tada.tadaconv.bias"] == 0.0  # (1, 1, C): a bias by its name
    assert wd["backbone.class_embedding"] == 0.0
    assert wd["backbone.positional_embedding"] == wd["backbone.conv1.weight"] == 0.05
    assert wd["backbone.layers.3.attn.in_proj_weight"] == 0.05 and wd["backbone.layers.3.attn.in_proj_bias"] == 0.0
    assert wd["backbone.layers.3.tada.tadaconv.bn_a.weight"] == 0.0
    assert wd["head.out.weight"] == 0.05


def test_double_tada_and_large_models_get_their_own_decay():
    cfg = tadaformer_cfg("0.85")
    model = NamedParameters(tadaformer_shapes(width=16, depth=24, patch=14, double_tada=True))
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN, num_layers=24)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    mult = {n: by_param[id(p)]["lr_mult"] for n, p in model.named_parameters()}
    assert mult["backbone.layers.5.tada2.tada_proj.weight"] == pytest.approx(10 * 0.85 ** 19)
    assert mult["backbone.conv1.weight"] == pytest.approx(0.85 ** 25)


def test_layer_ids_follow_the_names():
    assert layer_id("backbone.positional_embedding", 12) == 0
    assert layer_id("module.backbone.ln_pre.weight", 12) == 0
    assert layer_id("backbone.layers.0.ln_1.weight", 12) == 1
    assert layer_id("module.backbone.layers.11.mlp.c_fc.bias", 12) == 12
    assert layer_id("backbone.ln_post.weight", 12) == 13
    assert layer_id("head.out.weight", 12) == 13
    with pytest.raises(ValueError, match="layer 12 but VIDEO.BACKBONE.DEPTH is 12"):
        layer_id("backbone.layers.12.ln_1.weight", 12)


def test_layer_wise_decay_on_a_model_without_transformer_layers_is_an_error():
    cfg = tadaformer_cfg()
    model = NamedParameters(convnext_shapes(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=3))
    with pytest.raises(ValueError, match=r"backbone.layers.\{i\}"):
        build_optimizer(model, cfg.OPTIMIZER, cfg.BN, num_layers=12)


def test_adam_and_sgd_are_selectable_and_others_are_not():
    model = NamedParameters(convnext_shapes(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_classes=3), device="cpu")
    cfg = v2_optimizer_cfg("OPTIMIZER.OPTIM_METHOD", "adam")
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN)
    assert type(opt) is torch.optim.Adam and opt.param_groups[0]["betas"] == (0.9, 0.999)
    cfg = v2_optimizer_cfg("OPTIMIZER.OPTIM_METHOD", "sgd")
    assert type(build_optimizer(model, cfg.OPTIMIZER, cfg.BN)) is torch.optim.SGD
    with pytest.raises(Exception, match="OPTIM_METHOD"):
        v2_optimizer_cfg("OPTIMIZER.OPTIM_METHOD", "lamb")


def test_adamw_decays_only_the_groups_that_ask():
    """One AdamW step: a zero-gradient weight in a decayed group shrinks by lr*wd, a bias does not."""
    model = NamedParameters({"backbone.conv.weight": (2, 2), "backbone.conv.bias": (2,)}, device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    cfg = v2_optimizer_cfg()
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN)
    set_lr(opt, 0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(model.backbone.conv.weight, torch.full((2, 2), 1 - 0.1 * 0.02))
    assert torch.equal(model.backbone.conv.bias, torch.ones(2))


@pytest.mark.parametrize("recipe, points", [
    (["5e-4", "100", "8", "1e-6", "cosine", "0.0", "false"],  # TAdaConvNeXtV2-T K400
     {0: 1e-6, 4: 2.466e-4, 8: 4.921e-4, 50: 2.5e-4}),
    (["2.5e-4", "64", "2.5", "1e-6", "cosine", "1e-6", "true"],  # S/B SSv2: cosine ignores the v2 keys
     {2.5: 2.491e-4}),
    (["5e-5", "30", "5", "1e-6", "cosine_v2", "1e-6", "true"],  # TAdaFormer-B/16 K400
     {2.5: 2.55e-5, 5: 5e-5, 15: 3.307e-5, 30: 1e-6}),
    (["5e-4", "24", "4", "1e-8", "cosine_v2", "1e-6", "true"],  # TAdaFormer-B/16 SSv2
     {4: 5e-4, 12: 3.276e-4}),
])
def test_v2_schedules_match_the_official_values(recipe, points):
    keys = ["BASE_LR", "MAX_EPOCH", "WARMUP_EPOCHS", "WARMUP_START_LR", "LR_POLICY", "COSINE_END_LR",
            "COSINE_AFTER_WARMUP"]
    cfg = load_config(K400, [t for k, v in zip(keys, recipe, strict=True) for t in (f"OPTIMIZER.{k}", v)])
    for e, want in points.items():
        assert lr_from_config(cfg.OPTIMIZER, e, global_batch=64) == pytest.approx(want, rel=2e-3), e


def test_cosine_v2_formula_after_warmup():
    cfg = load_config(K400, ["OPTIMIZER.LR_POLICY", "cosine_v2", "OPTIMIZER.BASE_LR", "1.0",
                             "OPTIMIZER.COSINE_END_LR", "0.1", "OPTIMIZER.COSINE_AFTER_WARMUP", "true",
                             "OPTIMIZER.MAX_EPOCH", "10", "OPTIMIZER.WARMUP_EPOCHS", "2",
                             "OPTIMIZER.WARMUP_START_LR", "0.0"])
    for e in (2.0, 3.7, 6.0, 9.99):
        want = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (e - 2) / 8))
        assert lr_from_config(cfg.OPTIMIZER, e, global_batch=8) == pytest.approx(want, rel=1e-12)
    assert lr_from_config(cfg.OPTIMIZER, 1.0, global_batch=8) == pytest.approx(0.5)


def test_label_smoothing_loss_is_the_official_soft_target_loss():
    """Mean over the batch of -sum(y * log_softmax(z)), y = eps/K off and 1 - eps + eps/K on."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    eps, k = 0.1, 5
    soft = torch.full((6, k), eps / k, dtype=torch.float64)
    soft[torch.arange(6), labels] = 1 - eps + eps / k
    want = (-(soft * logits.log_softmax(1)).sum(1)).mean()
    got = torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, labels)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_the_real_tadaconvnextv2_tiny_gets_the_official_groups():
    """The official Tiny K400 config's model and optimizer, not a stand-in: the same group table."""
    from tada.models import build_model

    cfg = load_config(REPO / "configs/projects/tadaconvnextv2/tadaconvnextv2_tiny_k400_16f.yaml")
    opt = build_optimizer(build_model(cfg), cfg.OPTIMIZER, cfg.BN,
                          lr_reduce=cfg.TRAIN.LR_REDUCE and cfg.TRAIN.FINE_TUNE)
    assert type(opt) is torch.optim.AdamW and opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    assert [len(g["params"]) for g in opt.param_groups] == [74, 0, 108, 108, 80, 62, 1, 1, 0]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == 45_971_488
