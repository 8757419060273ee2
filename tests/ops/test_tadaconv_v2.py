"""TAdaConv2dV2: the plain-conv form equals the per-frame-kernel form (values and gradients, float64)."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tada.ops import RouteFuncAttention, TAdaConv2dV2, tada_conv2d_v2_grouped_reference

TOL = dict(rtol=1e-10, atol=1e-10)


def _grads(outs, inputs, seed):
    gen = torch.Generator().manual_seed(seed)
    seeds = [torch.randn(o.shape, generator=gen, dtype=o.dtype) for o in outs]
    return list(torch.autograd.grad(outs, inputs, seeds))


# (B, T, H, W, c_in, c_out, kernel, padding, groups)
GRID = [
    (2, 3, 7, 6, 6, 6, 7, 3, 6),  # depthwise 7x7 "same", as in TAdaConvNeXtV2
    (2, 4, 5, 5, 8, 8, 3, 1, 8),  # depthwise 3x3, as in TAdaFormer
    (1, 3, 6, 5, 4, 6, 3, 1, 1),  # dense
    (2, 2, 6, 7, 6, 4, 3, 0, 2),  # grouped, shrinking
]


@pytest.mark.parametrize("cal_dim", ["cin", "cout"])
@pytest.mark.parametrize("bias_mode", ["none", "plain", "calibrated"])
@pytest.mark.parametrize("case", GRID)
def test_equals_grouped_reference(case, cal_dim, bias_mode):
    b, t, h, w, c_in, c_out, k, p, g = case
    torch.manual_seed(hash((case, cal_dim, bias_mode)) % 2**31)
    conv = TAdaConv2dV2(c_in, c_out, (1, k, k), padding=(0, p, p), groups=g, bias=bias_mode != "none",
                        cal_dim=cal_dim, internal_rf_func=False, internal_temp_aggr=False).double()
    if conv.bias is not None:
        with torch.no_grad():
            conv.bias.normal_()
    x = torch.randn(b, c_in, t, h, w, dtype=torch.float64, requires_grad=True)
    c_cal = c_in if cal_dim == "cin" else c_out
    alpha_w = (torch.randn(b, c_cal, t, 1, 1, dtype=torch.float64) + 1).requires_grad_()
    alpha_b = (torch.randn(b, c_out, t, 1, 1, dtype=torch.float64) + 1).requires_grad_()
    alpha = (alpha_w, alpha_b) if bias_mode == "calibrated" else alpha_w
    out = conv(x, alpha)
    ref = tada_conv2d_v2_grouped_reference(
        x, alpha_w, alpha_b if bias_mode == "calibrated" else None, conv.weight, conv.bias,
        padding=conv.padding, groups=g, cal_dim=cal_dim,
    )
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, **TOL)
    inputs = [x, alpha_w, conv.weight] + ([conv.bias] if conv.bias is not None else [])
    inputs += [alpha_b] if bias_mode == "calibrated" else []
    for got, want in zip(_grads([out], inputs, 1), _grads([ref], inputs, 1), strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_grouped_reference_is_the_per_frame_definition():
    """The reference itself: per (b, t) conv2d with the calibrated kernel and calibrated bias."""
    torch.manual_seed(0)
    b, t, c_in, c_out, g = 2, 3, 4, 6, 2
    x = torch.randn(b, c_in, t, 6, 5, dtype=torch.float64)
    weight = torch.randn(1, 1, c_out, c_in // g, 3, 3, dtype=torch.float64)
    bias = torch.randn(1, 1, c_out, dtype=torch.float64)
    alpha_b = torch.randn(b, c_out, t, 1, 1, dtype=torch.float64)
    for cal_dim in ("cin", "cout"):
        alpha_w = torch.randn(b, c_in if cal_dim == "cin" else c_out, t, 1, 1, dtype=torch.float64)
        ref = tada_conv2d_v2_grouped_reference(x, alpha_w, alpha_b, weight, bias, padding=1, groups=g, cal_dim=cal_dim)
        for bi, ti in itertools.product(range(b), range(t)):
            a = alpha_w[bi, :, ti, 0, 0]
            w0 = weight[0, 0]
            if cal_dim == "cin":
                scale = torch.stack([a[(o // (c_out // g)) * (c_in // g):][: c_in // g] for o in range(c_out)])
                kernel = w0 * scale[:, :, None, None]
            else:
                kernel = w0 * a[:, None, None, None]
            y = F.conv2d(x[bi : bi + 1, :, ti], kernel, bias[0, 0] * alpha_b[bi, :, ti, 0, 0], padding=1, groups=g)
            torch.testing.assert_close(ref[bi, :, ti], y[0], **TOL)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            bias = 1.0 if name.endswith("bn_a.weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3 + bias)
        for bn in (module.bn_a, module.bn_b):
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen))
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)


def _official_internal(conv: TAdaConv2dV2, x5: torch.Tensor, training: bool) -> torch.Tensor:
    """Internal routing + grouped per-frame conv + bn_a(y) + bn_b(AvgPool3d(y)), all on (B, C, T, H, W)."""
    alpha_w, alpha_b = conv.rf_func(x5)
    y = tada_conv2d_v2_grouped_reference(x5, alpha_w, alpha_b, conv.weight, conv.bias, padding=conv.padding,
                                         groups=conv.groups, cal_dim=conv.cal_dim)
    pooled = F.avg_pool3d(y, (3, 1, 1), 1, (1, 0, 0), count_include_pad=True)

    def bn(m, v):
        return F.batch_norm(v, m.running_mean.clone(), m.running_var.clone(), m.weight, m.bias, training, 0.1, m.eps)

    return bn(conv.bn_a, y) + bn(conv.bn_b, pooled)


@pytest.mark.parametrize("training", [False, True])
def test_token_mode_with_internal_routing_and_aggregation(training):
    """(L, B*T, C) tokens of a square grid, as TAdaFormer calls it (depthwise 3x3, cal "cout", heads of 4)."""
    torch.manual_seed(5)
    b, t, c, side = 2, 4, 16, 5
    conv = TAdaConv2dV2(c, c, (1, 3, 3), padding=(0, 1, 1), groups=c, cal_dim="cout", num_frames=t,
                        rf_r=2, rf_k=(3, 3), head_dim=4).double()
    _randomise(conv, 5)
    conv.train(training)
    x5 = torch.randn(b, c, t, side, side, dtype=torch.float64, requires_grad=True)
    tokens = x5.permute(3, 4, 0, 2, 1).reshape(side * side, b * t, c)  # token l = i*w + j, n = b*T + t
    out = conv(tokens)
    want = _official_internal(conv, x5, training).permute(3, 4, 0, 2, 1).reshape(side * side, b * t, c)
    torch.testing.assert_close(out, want, **TOL)
    params = [x5] + [p for p in conv.parameters()]
    for got, ref in zip(_grads([out], params, 2), _grads([want], params, 2), strict=True):
        torch.testing.assert_close(got, ref, **TOL)


def test_video_and_frames_modes_agree_with_internal_parts():
    torch.manual_seed(6)
    conv = TAdaConv2dV2(8, 8, 3, padding=1, groups=8, cal_dim="cout", rf_r=2, head_dim=2).double().eval()
    _randomise(conv, 6)
    x5 = torch.randn(2, 8, 3, 4, 4, dtype=torch.float64)
    out5 = conv(x5)
    torch.testing.assert_close(out5, _official_internal(conv, x5, False), **TOL)
    frames = conv(x5.transpose(1, 2).reshape(6, 8, 4, 4), num_frames=3)
    torch.testing.assert_close(frames, out5.transpose(1, 2).reshape(6, 8, 4, 4), **TOL)


def test_construction_is_official():
    conv = TAdaConv2dV2(128, 128, (1, 3, 3), padding=(0, 1, 1), groups=128, cal_dim="cout", num_frames=8, rf_r=2)
    shapes = {k: tuple(v.shape) for k, v in conv.state_dict().items()}
    assert shapes["weight"] == (1, 1, 128, 1, 3, 3) and shapes["bias"] == (1, 1, 128)
    assert {k for k in shapes if k.startswith("rf_func.")} == {
        f"rf_func.{n}" for n in ("a.weight", "a.bias", "norm.weight", "norm.bias", "norm_transformer.weight",
                                 "norm_transformer.bias", "qkv_proj.weight", "qkv_proj.bias", "attn_out.weight",
                                 "attn_out.bias", "b.weight", "b_bias.weight")
    }
    assert {k for k in shapes if k.startswith("bn_")} == {
        f"bn_{ab}.{n}" for ab in "ab" for n in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    assert torch.count_nonzero(conv.bias) == 0
    assert 0.015 < conv.weight.std().item() < 0.025 and conv.weight.abs().max() <= 2.0
    # internal routing: no "+1" and random (non-zero) b/b_bias; bn_b starts at zero
    assert conv.rf_func.zero_init_cal is False
    assert torch.count_nonzero(conv.rf_func.b.weight) > 0 and torch.count_nonzero(conv.rf_func.b_bias.weight) > 0
    assert torch.count_nonzero(conv.rf_func.a.bias) == 0
    assert torch.count_nonzero(conv.bn_b.weight) == 0 and torch.all(conv.bn_a.weight == 1)


def test_without_bias_there_is_no_bias_calibration():
    conv = TAdaConv2dV2(8, 8, 3, padding=1, groups=8, bias=False, rf_r=2, head_dim=4)
    assert conv.bias is None and conv.rf_func.b_bias is None
    assert isinstance(conv.rf_func, RouteFuncAttention)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=4, out_channels=6, kernel_size=3), "must equal out_channels"),
        (dict(in_channels=4, out_channels=4, kernel_size=(3, 3, 3)), "temporal entry"),
        (dict(in_channels=4, out_channels=4, kernel_size=3, cal_dim="hw"), "cal_dim"),
        (dict(in_channels=6, out_channels=6, kernel_size=3, groups=4), "divisible by groups"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TAdaConv2dV2(**kwargs)


def test_input_errors():
    conv = TAdaConv2dV2(4, 4, 3, padding=1, internal_rf_func=False, internal_temp_aggr=False)
    with pytest.raises(ValueError, match="needs alpha"):
        conv(torch.zeros(1, 4, 3, 5, 5))
    with pytest.raises(ValueError, match="num_frames"):
        conv(torch.zeros(9, 2, 4), torch.ones(2, 4, 1, 1))
    with pytest.raises(ValueError, match="square grid"):
        conv(torch.zeros(8, 2, 4), torch.ones(2, 4, 1, 1), num_frames=2)
    with pytest.raises(ValueError, match="alpha_w must have shape"):
        conv(torch.zeros(6, 4, 5, 5), torch.ones(6, 3, 1, 1), num_frames=3)


def test_ops_import_without_config_or_data_code():
    import ast
    import subprocess
    import sys

    code = "import sys, tada.ops; print(sorted(m for m in sys.modules if m.startswith('tada')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out)  # a printed list of module names
    assert "tada.ops.tadaconv_v2" in loaded
    assert not [m for m in loaded if m.startswith(("tada.config", "tada.data", "tada.models", "tada.engine"))]
