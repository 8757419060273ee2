"""RouteFuncAttention against the official semantics written with 5-D Conv3d ops and a per-head loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tada.ops import RouteFuncAttention

TOL = dict(rtol=1e-10, atol=1e-10)


def _ln_channels_first(x, weight, bias):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return weight.view(1, -1, 1, 1, 1) * (x - u) / torch.sqrt(s + 1e-6) + bias.view(1, -1, 1, 1, 1)


def _official(rf: RouteFuncAttention, x: torch.Tensor, head_dim: int):
    """Conv3d on (B, C, T, 1, 1), channels-first LNs, attention head by head with explicit channel indices."""
    p = F.adaptive_avg_pool3d(x, (x.shape[2], 1, 1))
    ka, kb = rf.a.kernel_size, rf.b.kernel_size
    h = F.conv3d(p, rf.a.weight, rf.a.bias, padding=(ka // 2, 0, 0))
    h = _ln_channels_first(h, rf.norm.weight, rf.norm.bias)
    h = h * torch.sigmoid(1.702 * h)
    z = _ln_channels_first(h, rf.norm_transformer.weight, rf.norm_transformer.bias)
    qkv = F.conv3d(z, rf.qkv_proj.weight, rf.qkv_proj.bias)[:, :, :, 0, 0]  # (B, 3c, T)
    c = h.shape[1]
    heads = c // head_dim
    outs = []
    for j in range(heads):
        idx = [d * heads + j for d in range(head_dim)]
        q = qkv[:, [0 * c + i for i in idx]].transpose(1, 2)  # (B, T, head_dim)
        k = qkv[:, [1 * c + i for i in idx]].transpose(1, 2)
        v = qkv[:, [2 * c + i for i in idx]].transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(1, 2) / (c ** 0.5), dim=-1)
        outs.append(attn @ v)  # (B, T, head_dim)
    o = torch.cat(outs, dim=2).transpose(1, 2)[:, :, :, None, None]  # head-major channels
    h = h + F.conv3d(o, rf.attn_out.weight, rf.attn_out.bias)
    alpha_w = F.conv3d(h, rf.b.weight, None, padding=(kb // 2, 0, 0))
    alpha_b = F.conv3d(h, rf.b_bias.weight, None, padding=(kb // 2, 0, 0)) if rf.b_bias is not None else None
    if rf.zero_init_cal:
        alpha_w = alpha_w + 1
        alpha_b = None if alpha_b is None else alpha_b + 1
    return alpha_w, alpha_b


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.4)


# (C, ratio, kernels, head_dim, with_bias_cal, zero_init_cal, T)
CASES = [
    (16, 2, (3, 3), 4, True, True, 5),  # 2 interleaved heads
    (24, 2, (3, 3), 4, True, False, 4),  # 3 heads, no "+1"
    (12, 4, (3, 1), 3, False, True, 6),  # no bias calibration
    (8, 2, (1, 3), 4, False, False, 3),  # 1 head
    (32, 2, (5, 3), 2, True, True, 7),  # 8 heads
]


@pytest.mark.parametrize("case", CASES)
def test_route_func_attention_equals_official(case):
    c, r, ks, hd, bias_cal, zero_init, t = case
    torch.manual_seed(len(CASES) * c + t)
    rf = RouteFuncAttention(c, ratio=r, kernels=ks, with_bias_cal=bias_cal, zero_init_cal=zero_init,
                            head_dim=hd).double()
    _randomise(rf, c + t)
    x = torch.randn(2, c, t, 5, 4, dtype=torch.float64, requires_grad=True)
    got_w, got_b = rf(x)
    want_w, want_b = _official(rf, x, hd)
    assert got_w.shape == (2, c, t, 1, 1)
    torch.testing.assert_close(got_w, want_w, **TOL)
    assert (got_b is None) == (not bias_cal)
    if bias_cal:
        torch.testing.assert_close(got_b, want_b, **TOL)
    params = [x] + list(rf.parameters())
    outs_got = [got_w] + ([got_b] if bias_cal else [])
    outs_want = [want_w] + ([want_b] if bias_cal else [])
    seeds = [torch.randn(o.shape, dtype=o.dtype, generator=torch.Generator().manual_seed(i))
             for i, o in enumerate(outs_got)]
    g_got = torch.autograd.grad(outs_got, params, seeds)
    g_want = torch.autograd.grad(outs_want, params, seeds)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_standard_attention_layout_would_differ():
    """With several heads the interleaved layout and the c^-1/2 scale matter (a textbook MHA differs)."""
    torch.manual_seed(3)
    rf = RouteFuncAttention(16, ratio=2, head_dim=4, with_bias_cal=False, zero_init_cal=False).double()
    _randomise(rf, 3)
    u = torch.randn(2, 6, 16, dtype=torch.float64)
    got, _ = rf.forward_pooled(u)
    with torch.no_grad():
        h = rf.norm(rf.a(u))
        h = h * torch.sigmoid(1.702 * h)
        qkv = rf.qkv_proj(rf.norm_transformer(h))
        q, k, v = qkv.view(2, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)  # contiguous heads
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 6, 8)
        textbook = rf.b(h + rf.attn_out(o))
    assert (got - textbook).abs().max() > 1e-3


def test_frames_layout_equals_video_layout():
    torch.manual_seed(4)
    rf = RouteFuncAttention(8, ratio=2, head_dim=2, with_bias_cal=True).double()
    _randomise(rf, 4)
    x = torch.randn(3, 8, 4, 5, 5, dtype=torch.float64)
    vw, vb = rf(x)
    fw, fb = rf(x.transpose(1, 2).reshape(12, 8, 5, 5), num_frames=4)
    torch.testing.assert_close(fw, vw.transpose(1, 2).reshape(12, 8, 1, 1), **TOL)
    torch.testing.assert_close(fb, vb.transpose(1, 2).reshape(12, 8, 1, 1), **TOL)


def test_zero_init_cal_starts_at_one_and_flags_skip_init():
    rf = RouteFuncAttention(16, ratio=2, head_dim=8, with_bias_cal=True, zero_init_cal=True)
    assert rf.b.skip_init and rf.b_bias.skip_init
    assert torch.count_nonzero(rf.b.weight) == 0 and torch.count_nonzero(rf.b_bias.weight) == 0
    aw, ab = rf(torch.randn(2, 16, 4, 3, 3))
    assert torch.equal(aw, torch.ones_like(aw)) and torch.equal(ab, torch.ones_like(ab))
    assert rf.heads == 1


def test_state_dict_names_and_shapes_are_official():
    rf = RouteFuncAttention(96, ratio=2, kernels=(3, 3), with_bias_cal=True, head_dim=48)
    shapes = {k: tuple(v.shape) for k, v in rf.state_dict().items()}
    assert shapes == {
        "a.weight": (48, 96, 3, 1, 1), "a.bias": (48,),
        "norm.weight": (48,), "norm.bias": (48,),
        "norm_transformer.weight": (48,), "norm_transformer.bias": (48,),
        "qkv_proj.weight": (144, 48, 1, 1, 1), "qkv_proj.bias": (144,),
        "attn_out.weight": (48, 48, 1, 1, 1), "attn_out.bias": (48,),
        "b.weight": (96, 48, 3, 1, 1), "b_bias.weight": (96, 48, 3, 1, 1),
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=96, ratio=2, head_dim=64), "multiple of head_dim"),
        (dict(in_channels=3, ratio=4), "must be >= 1"),
        (dict(in_channels=8, kernels=(3,)), "two temporal kernel sizes"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RouteFuncAttention(**kwargs)


def test_frames_input_needs_num_frames():
    rf = RouteFuncAttention(8, ratio=2, head_dim=4)
    with pytest.raises(ValueError, match="num_frames"):
        rf(torch.zeros(6, 8, 2, 2))
    with pytest.raises(ValueError, match="do not split"):
        rf(torch.zeros(6, 8, 2, 2), num_frames=4)


def test_traced_routing_is_the_same_function():
    """Under tracing the temporal convs stack shifted columns instead of an unfold (ONNX-exportable)."""
    torch.manual_seed(7)
    rf = RouteFuncAttention(8, ratio=2, head_dim=2, with_bias_cal=True).double()
    _randomise(rf, 7)
    u = torch.randn(2, 5, 8, dtype=torch.float64)
    v = torch.randn(3, 5, 8, dtype=torch.float64)

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rf = rf

        def forward(self, w):
            return self.rf.forward_pooled(w)

    traced = torch.jit.trace(Pooled(), (u,), check_trace=False)
    for got, want in zip(traced(v), rf.forward_pooled(v), strict=True):
        torch.testing.assert_close(got, want, **TOL)
