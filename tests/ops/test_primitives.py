"""The V2 primitives: channels-first LayerNorm, QuickGELU, the zero-padded 3x1x1 temporal mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tada.ops import LayerNormChannelsFirst, QuickGELU, quick_gelu, temporal_avg_pool3

TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 6), (3, 7, 4)])
def test_layernorm_channels_first_is_the_explicit_formula(shape):
    torch.manual_seed(0)
    ln = LayerNormChannelsFirst(shape[1]).double()
    assert ln.eps == 1e-6
    assert torch.equal(ln.weight, torch.ones(shape[1], dtype=torch.float64))
    assert torch.equal(ln.bias, torch.zeros(shape[1], dtype=torch.float64))
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    view = (1, -1) + (1,) * (x.dim() - 2)
    want = ln.weight.view(view) * (x - u) / torch.sqrt(s + 1e-6) + ln.bias.view(view)
    torch.testing.assert_close(ln(x), want, **TOL)


def test_layernorm_channels_first_rejects_wrong_channels():
    with pytest.raises(ValueError, match="LayerNormChannelsFirst"):
        LayerNormChannelsFirst(4)(torch.zeros(1, 3, 2))


def test_quick_gelu():
    x = torch.linspace(-6, 6, 101, dtype=torch.float64)
    want = x / (1 + torch.exp(-1.702 * x))
    torch.testing.assert_close(quick_gelu(x), want, **TOL)
    torch.testing.assert_close(QuickGELU()(x), want, **TOL)


@pytest.mark.parametrize("frames", [3, 4, 8])
def test_temporal_avg_pool3_equals_avg_pool3d_count_include_pad(frames):
    torch.manual_seed(frames)
    x = torch.randn(2, 3, frames, 4, 5, dtype=torch.float64, requires_grad=True)
    want = F.avg_pool3d(x, (3, 1, 1), 1, (1, 0, 0), count_include_pad=True)
    got = temporal_avg_pool3(x, dim=2)
    torch.testing.assert_close(got, want, **TOL)
    g = torch.randn_like(want)
    (gw,) = torch.autograd.grad(want, x, g)
    (gg,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(gg, gw, **TOL)
    # frame-major layout: the same function along dim 1
    torch.testing.assert_close(temporal_avg_pool3(x.transpose(1, 2), dim=1).transpose(1, 2), want, **TOL)


def test_temporal_avg_pool3_edges_are_divided_by_three():
    ones = torch.ones(1, 1, 5, 1, 1, dtype=torch.float64)
    got = temporal_avg_pool3(ones).flatten().tolist()
    assert got == pytest.approx([2 / 3, 1, 1, 1, 2 / 3], abs=1e-15)
    assert temporal_avg_pool3(torch.ones(1, 1, 1, 1, 1)).item() == pytest.approx(1 / 3)
