"""RouteFuncMLP: the official semantics, computed on (B, C, T) with 1-D convs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tada.ops import RouteFuncMLP

TOL = dict(rtol=1e-10, atol=1e-10)


def _official(rf: RouteFuncMLP, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The official RouteFuncMLP, written with 5-D Conv3d/BN3d ops on (B, C, T, H, W)."""
    gctx = F.conv3d(F.adaptive_avg_pool3d(x, 1), rf.g.weight, rf.g.bias)
    u = F.adaptive_avg_pool3d(x, (x.shape[2], 1, 1))
    ka, kb = rf.a.kernel_size, rf.b.kernel_size
    h = F.conv3d(u + gctx, rf.a.weight, rf.a.bias, padding=(ka // 2, 0, 0))
    bn = rf.bn
    h = F.batch_norm(h, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, training, 0.1, bn.eps)
    return F.conv3d(F.relu(h), rf.b.weight, None, padding=(kb // 2, 0, 0)) + 1


def _randomise(rf: RouteFuncMLP, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
        rf.bn.running_mean.copy_(torch.randn(rf.bn.running_mean.shape, generator=gen))
        rf.bn.running_var.copy_(torch.rand(rf.bn.running_var.shape, generator=gen) + 0.5)


def test_alpha_is_one_at_init_and_b_is_zero():
    rf = RouteFuncMLP(16)
    assert torch.count_nonzero(rf.b.weight) == 0
    torch.nn.init.normal_(rf.b.weight)
    rf.init_weights()  # the TAda2D init: b zero again, Kaiming-normal g and a, zero biases
    assert torch.count_nonzero(rf.b.weight) == 0 and torch.count_nonzero(rf.g.bias) == 0
    assert abs(rf.g.weight.std().item() / (2 / 16) ** 0.5 - 1) < 0.2
    alpha = rf(torch.randn(2, 16, 5, 7, 7))
    assert alpha.shape == (2, 16, 5, 1, 1)
    assert torch.equal(alpha, torch.ones_like(alpha))


def test_parameter_names_and_official_shapes():
    rf = RouteFuncMLP(64, ratio=4, kernels=(3, 3))
    shapes = {k: tuple(v.shape) for k, v in rf.state_dict().items()}
    assert shapes == {
        "g.weight": (64, 64, 1, 1, 1), "g.bias": (64,),
        "a.weight": (16, 64, 3, 1, 1), "a.bias": (16,),
        "bn.weight": (16,), "bn.bias": (16,), "bn.running_mean": (16,), "bn.running_var": (16,),
        "bn.num_batches_tracked": (),
        "b.weight": (64, 16, 3, 1, 1),
    }


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kernels", [(3, 3), (1, 5)])
def test_matches_official_semantics_values_and_grads(training, kernels):
    rf = RouteFuncMLP(12, ratio=4, kernels=kernels).double().train(training)
    _randomise(rf, 4)
    x = torch.randn(3, 12, 6, 5, 4, dtype=torch.float64, requires_grad=True)
    ref = _official(rf, x, training)
    out = rf(x)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn(out.shape, dtype=torch.float64)
    params = [x] + list(rf.parameters())
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(got, want, **TOL)


def test_frames_layout_matches_video_layout_and_updates_bn_stats():
    rf = RouteFuncMLP(8, ratio=2).double()
    _randomise(rf, 5)
    x = torch.randn(2, 8, 4, 6, 6, dtype=torch.float64)
    frames = x.transpose(1, 2).reshape(8, 8, 6, 6)
    before = rf.bn.running_mean.clone()
    video = rf(x)
    after_video = rf.bn.running_mean.clone()
    assert not torch.equal(before, after_video)
    rf.bn.running_mean.copy_(before)
    out = rf(frames, num_frames=4)
    assert out.shape == (8, 8, 1, 1)
    torch.testing.assert_close(out.view(2, 4, 8).transpose(1, 2), video[..., 0, 0], **TOL)
    torch.testing.assert_close(rf.bn.running_mean, after_video, **TOL)


def test_bn_takes_the_given_eps_and_momentum_and_out_channels():
    rf = RouteFuncMLP(8, bn_eps=1e-3, bn_momentum=0.01, out_channels=12)
    assert rf.bn.eps == 1e-3 and rf.bn.momentum == 0.01
    assert rf(torch.randn(1, 8, 3, 4, 4)).shape == (1, 12, 3, 1, 1)


def test_errors():
    rf = RouteFuncMLP(8)
    with pytest.raises(ValueError, match="num_frames"):
        rf(torch.randn(4, 8, 5, 5))
    with pytest.raises(ValueError, match="disagrees"):
        rf(torch.randn(1, 8, 3, 5, 5), num_frames=4)
    with pytest.raises(ValueError, match="6 frames do not split into clips of num_frames=4"):
        rf(torch.randn(6, 8, 5, 5), num_frames=4)
    with pytest.raises(ValueError, match="odd"):
        RouteFuncMLP(8, kernels=(2, 3))
    with pytest.raises(ValueError, match=">= 1"):
        RouteFuncMLP(2, ratio=4)


# ------------------------------------------------------------------------------------------------
# The calibration-range clamp (track_range / track_calibration_range)
# ------------------------------------------------------------------------------------------------
def _tracking(seed: int = 0, channels: int = 8) -> RouteFuncMLP:
    rf = RouteFuncMLP(channels).double()
    _randomise(rf, seed)
    rf.track_range(0.25)
    return rf


def test_without_the_clamp_the_state_dict_is_the_official_one():
    rf = RouteFuncMLP(8)
    assert rf.range_momentum is None
    assert not any("alpha_" in k for k in rf.state_dict())


def test_range_is_batch_extremes_then_their_moving_average():
    rf = _tracking().train()
    assert torch.equal(rf.alpha_low, torch.full((8,), -float("inf"), dtype=torch.float64))
    x1, x2 = torch.randn(3, 8, 5, 4, 4, dtype=torch.float64), torch.randn(2, 8, 5, 4, 4, dtype=torch.float64)
    a1 = rf(x1).squeeze(-1).squeeze(-1)  # (B, C, T): train mode returns alpha unclamped
    lo1, hi1 = a1.amin(dim=(0, 2)), a1.amax(dim=(0, 2))
    torch.testing.assert_close(rf.alpha_low, lo1, **TOL)
    torch.testing.assert_close(rf.alpha_high, hi1, **TOL)
    a2 = rf(x2).squeeze(-1).squeeze(-1)
    torch.testing.assert_close(rf.alpha_low, lo1 + 0.25 * (a2.amin(dim=(0, 2)) - lo1), **TOL)
    torch.testing.assert_close(rf.alpha_high, hi1 + 0.25 * (a2.amax(dim=(0, 2)) - hi1), **TOL)


def test_eval_clamps_to_the_range_and_leaves_values_inside_it():
    rf = _tracking(1).train()
    rf(torch.randn(4, 8, 6, 3, 3, dtype=torch.float64))
    rf.eval()
    plain = RouteFuncMLP(8).double().eval()
    plain.load_state_dict(rf.state_dict(), strict=False)  # same weights and BN statistics, no clamp
    x = torch.randn(4, 8, 6, 3, 3, dtype=torch.float64) * 20  # far outside what the range saw
    free, clamped = plain(x), rf(x)
    lo, hi = rf.alpha_low.view(1, -1, 1, 1, 1), rf.alpha_high.view(1, -1, 1, 1, 1)
    assert ((free < lo) | (free > hi)).any()  # the test input does leave the range
    assert torch.equal(clamped, torch.maximum(torch.minimum(free, hi), lo))
    inside = (free >= lo) & (free <= hi)
    assert inside.any() and torch.equal(clamped[inside], free[inside])


def test_loading_an_official_state_dict_leaves_the_function_official():
    official = RouteFuncMLP(8).double().eval()
    _randomise(official, 2)
    rf = _tracking(3).train()
    rf(torch.randn(2, 8, 4, 3, 3, dtype=torch.float64))  # tracked something...
    rf.load_state_dict(official.state_dict())  # ...then strict-loads a state dict without the buffers
    assert torch.isinf(rf.alpha_low).all() and torch.isinf(rf.alpha_high).all()
    x = torch.randn(2, 8, 4, 3, 3, dtype=torch.float64) * 50
    assert torch.equal(rf.eval()(x), official(x))
    # a clamping module's own state dict round-trips with its range
    rf.train()(torch.randn(2, 8, 4, 3, 3, dtype=torch.float64))
    again = _tracking(4)
    again.load_state_dict(rf.state_dict())
    assert torch.equal(again.alpha_low, rf.alpha_low) and torch.equal(again.alpha_high, rf.alpha_high)


def test_track_calibration_range_reaches_every_routing_function_or_refuses():
    from tada.models import create_model
    from tada.ops import track_calibration_range

    model = create_model("tada2d_r26", num_classes=3, widths=(8, 16, 32, 64, 128))
    assert track_calibration_range(model, momentum=0.1) == 8
    assert sum(k.endswith("alpha_low") for k in model.state_dict()) == 8
    with pytest.raises(ValueError, match="no RouteFuncMLP"):
        track_calibration_range(create_model("tsn_r26", num_classes=3, widths=(8, 16, 32, 64, 128)))
    with pytest.raises(ValueError, match="momentum"):
        RouteFuncMLP(8).track_range(0.0)


def test_the_clamp_bounds_eval_mode_growth_that_the_official_function_lets_through():
    """Eval-mode TAda2D squares the scale of a clip's features in every block (alpha grows with the
    input, the TAdaConv output with alpha times the input). Without the clamp a clip at 20x the
    training scale reaches logits near 1e298 (float32 gives inf); with it they grow about linearly."""
    from tada.models import create_model
    from tada.ops import track_calibration_range

    torch.manual_seed(0)
    model = create_model("tada2d_r26", num_classes=3, widths=(8, 16, 32, 64, 128), dropout=0.0).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-like calibration: alpha depends on the input
        for m in model.modules():
            if isinstance(m, RouteFuncMLP):
                m.b.weight.copy_(torch.randn(m.b.weight.shape, generator=gen, dtype=torch.float64) * 0.5)
    clamped = create_model("tada2d_r26", num_classes=3, widths=(8, 16, 32, 64, 128), dropout=0.0).double()
    track_calibration_range(clamped)
    clamped.load_state_dict(model.state_dict())
    train = torch.randn(8, 3, 4, 32, 32, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        for net in (model, clamped):
            net.train()
            for _ in range(20):
                net(train)
            net.eval()
        x = torch.randn(2, 3, 4, 32, 32, generator=gen, dtype=torch.float64)
        normal = model(x).abs().max()
        near = (clamped(x) - model(x)).abs().max()
        big = x * 20
        free, bounded = model(big).abs().max(), clamped(big).abs().max()
    assert near < 0.5 * normal  # at the training scale the clamp barely acts
    assert free > 1e100 * normal  # measured: 4e298 against 0.25
    assert bounded < 100 * normal  # measured: 5.4, about linear in the 20x scale
