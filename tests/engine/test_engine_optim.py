"""Optimizer groups and the learning-rate schedule against the official values."""

import math

import pytest
import torch
from engine_standins import REPO

from tada.config import load_config
from tada.engine.optim import GROUP_NAMES, build_optimizer, clip_gradients, lr_at, lr_from_config, set_lr
from tada.models import build_model

K400 = REPO / "configs" / "projects" / "tada" / "k400" / "tada2d_8x8.yaml"


def test_k400_schedule_matches_official_values():
    cfg = load_config(K400)
    lr = lambda e: lr_from_config(cfg.OPTIMIZER, e, global_batch=128)  # noqa: E731
    assert lr(0) == pytest.approx(0.01)
    assert lr(4) == pytest.approx(0.123115, abs=1e-6)
    assert lr(8) == pytest.approx(0.236230, abs=1e-6)
    assert lr(50) == pytest.approx(0.12)
    assert lr(99.99) == pytest.approx(5.9e-9, rel=0.01)


def test_warmup_is_linear_to_the_cosine_value_and_continuous():
    kw = dict(base_lr=1.0, max_epoch=10, warmup_epochs=2, warmup_start_lr=0.1)
    end = lr_at(2.0, **kw)
    assert end == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lr_at(1.0, **kw) == pytest.approx(0.1 + 0.5 * (end - 0.1))
    assert lr_at(2.0 - 1e-9, **kw) == pytest.approx(end, abs=1e-6)
    assert lr_at(10.0, **kw) == pytest.approx(0.0, abs=1e-12)


def test_adjust_lr_scales_once_by_global_batch():
    cfg = load_config(K400, ["OPTIMIZER.ADJUST_LR", "true"])
    assert lr_from_config(cfg.OPTIMIZER, 50, global_batch=128) == pytest.approx(0.12 * 128 / 256)


def test_tada2d_r50_groups_match_the_official_table():
    cfg = load_config(K400)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN)
    assert [g["name"] for g in opt.param_groups] == list(GROUP_NAMES)
    tensors = [len(g["params"]) for g in opt.param_groups]
    elements = [sum(p.numel() for p in g["params"]) for g in opt.param_groups]
    assert tensors == [138, 32, 48, 32, 53, 0, 1, 1, 0]
    assert elements == [60672, 1888, 3143680, 4720, 23454912, 0, 819200, 400, 0]
    decay = [g["weight_decay"] for g in opt.param_groups]
    assert decay == [0.0, 0.0, 1e-4, 0.0, 1e-4, 0.0, 1e-4, 0.0, 0.0]
    g = opt.param_groups[0]
    assert g["momentum"] == 0.9 and g["nesterov"] and g["dampening"] == 0.0
    set_lr(opt, 0.3)
    assert all(g["lr"] == 0.3 for g in opt.param_groups)


def test_only_linear_freezes_the_backbone():
    cfg = load_config(K400, ["VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
                             "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128"])
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN, only_linear=True)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(model.head.out.weight), id(model.head.out.bias)}
    assert not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith("head."))
    assert isinstance(opt, torch.optim.SGD)


def _sgd_with_grads(*grads: list[float]) -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(len(g), dtype=torch.float64)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=torch.float64)
    return torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)


def test_clipping_scales_all_gradients_together_to_the_global_norm():
    opt = _sgd_with_grads([3.0, 0.0], [0.0, 4.0])  # global norm 5 over two groups
    norm = clip_gradients(opt, 1.0)
    assert norm.item() == pytest.approx(5.0)
    grads = [p.grad for g in opt.param_groups for p in g["params"]]
    assert torch.allclose(torch.cat(grads), torch.tensor([0.6, 0.0, 0.0, 0.8], dtype=torch.float64), atol=1e-6)


def test_clipping_leaves_gradients_below_the_limit_bit_identical_and_zero_is_off():
    opt = _sgd_with_grads([3.0, 0.0], [0.0, 4.0])
    before = [p.grad.clone() for g in opt.param_groups for p in g["params"]]
    assert clip_gradients(opt, 0.0) is None
    assert clip_gradients(opt, 5.5).item() == pytest.approx(5.0)
    after = [p.grad for g in opt.param_groups for p in g["params"]]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    with pytest.raises(ValueError, match="max_norm"):
        clip_gradients(opt, -1.0)


def test_the_clip_limit_is_a_checked_config_key():
    from tada.config import ConfigError

    assert load_config(K400).OPTIMIZER.CLIP_GRAD_NORM == 0.0  # the official loop does not clip
    with pytest.raises(ConfigError, match="CLIP_GRAD_NORM"):
        load_config(K400, ["OPTIMIZER.CLIP_GRAD_NORM", "-1"])
