"""TAdaConv2d/3d: the fast plain-conv form equals the official per-frame-kernel form, values and gradients."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
import torch.nn.functional as F

from tada.ops import TAdaConv2d, TAdaConv3d, tada_conv2d, tada_conv2d_grouped_reference, tada_conv3d_reference

TOL = dict(rtol=1e-10, atol=1e-10)


def _case_seed(*parts) -> int:
    """A seed fixed by the test case's parameters in every process (``hash`` of a str is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return list(torch.autograd.grad(out, inputs, g))


# (B, T, H, W, c_in, c_out, kernel, stride, padding, dilation, groups)
GRID_2D = [
    (2, 3, 9, 7, 6, 4, 3, 1, 1, 1, 1),
    (1, 4, 8, 8, 4, 6, 3, 2, 1, 1, 2),
    (2, 2, 11, 5, 6, 6, 3, 2, 1, 2, 3),
    (3, 1, 7, 9, 4, 8, 1, 1, 0, 1, 4),
    (1, 5, 6, 6, 3, 5, (3, 1), (2, 1), (1, 0), 1, 1),
    (2, 3, 13, 10, 8, 8, 5, 2, 2, 1, 8),
]


@pytest.mark.parametrize("cal_dim", ["cin", "cout"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("case", GRID_2D)
def test_tadaconv2d_equals_grouped_reference(case, cal_dim, bias):
    b, t, h, w, c_in, c_out, k, s, p, d, g = case
    torch.manual_seed(_case_seed(case, cal_dim, bias))
    conv = TAdaConv2d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, cal_dim=cal_dim).double()
    x = torch.randn(b, c_in, t, h, w, dtype=torch.float64, requires_grad=True)
    c_cal = c_in if cal_dim == "cin" else c_out
    alpha = (torch.randn(b, c_cal, t, 1, 1, dtype=torch.float64) + 1).requires_grad_()
    out = conv(x, alpha)
    ref = tada_conv2d_grouped_reference(
        x, alpha, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
        groups=g, cal_dim=cal_dim,
    )
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, **TOL)
    params = [x, alpha, conv.weight] + ([conv.bias] if bias else [])
    for got, want in zip(_grads(out, params, 1), _grads(ref, params, 1)):
        torch.testing.assert_close(got, want, **TOL)


def test_grouped_reference_matches_per_frame_definition():
    """The reference itself: per (b, t) conv2d with alpha-scaled kernels (the official computation, literally)."""
    torch.manual_seed(0)
    b, t, c_in, c_out, g = 2, 3, 4, 6, 2
    x = torch.randn(b, c_in, t, 7, 6, dtype=torch.float64)
    weight = torch.randn(1, 1, c_out, c_in // g, 3, 3, dtype=torch.float64)
    for cal_dim in ("cin", "cout"):
        alpha = torch.randn(b, c_in if cal_dim == "cin" else c_out, t, 1, 1, dtype=torch.float64)
        ref = tada_conv2d_grouped_reference(x, alpha, weight, stride=2, padding=1, groups=g, cal_dim=cal_dim)
        for bi, ti in itertools.product(range(b), range(t)):
            a = alpha[bi, :, ti, 0, 0]
            w0 = weight[0, 0]
            if cal_dim == "cin":
                # output channel o in group gi sees input channels gi*Cin/g + i
                scale = torch.stack([a[(o // (c_out // g)) * (c_in // g):][: c_in // g] for o in range(c_out)])
                kernel = w0 * scale[:, :, None, None]
            else:
                kernel = w0 * a[:, None, None, None]
            y = F.conv2d(x[bi : bi + 1, :, ti], kernel, stride=2, padding=1, groups=g)
            torch.testing.assert_close(ref[bi, :, ti], y[0], **TOL)


def test_alpha_one_is_a_plain_conv():
    torch.manual_seed(1)
    conv = TAdaConv2d(5, 7, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)).double()
    x = torch.randn(2, 5, 4, 9, 8, dtype=torch.float64)
    out = conv(x, torch.ones(2, 5, 4, 1, 1, dtype=torch.float64))
    plain = F.conv3d(x, conv.weight[0, 0].unsqueeze(2), stride=(1, 2, 2), padding=(0, 1, 1))
    torch.testing.assert_close(out, plain, **TOL)


def test_frames_layout_equals_video_layout_and_keeps_channels_last():
    torch.manual_seed(2)
    conv = TAdaConv2d(8, 8, 3, padding=1)
    b, t = 2, 3
    x = torch.randn(b, 8, t, 10, 10)
    alpha = torch.rand(b, 8, t, 1, 1) + 0.5
    video = conv(x, alpha)
    frames = x.transpose(1, 2).reshape(b * t, 8, 10, 10).contiguous(memory_format=torch.channels_last)
    a_frames = alpha.transpose(1, 2).reshape(b * t, 8)
    out = conv(frames, a_frames)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.view(b, t, 8, 10, 10).transpose(1, 2), video, rtol=1e-5, atol=1e-5)


def test_weight_layout_is_official_and_init_uses_2d_fan_in():
    conv = TAdaConv2d(64, 32, [1, 3, 3], stride=[1, 2, 2], padding=[0, 1, 1], cal_dim="cin")
    assert tuple(conv.weight.shape) == (1, 1, 32, 64, 3, 3)
    assert conv.bias is None
    bound = 1 / (64 * 9) ** 0.5  # kaiming_uniform(a=sqrt(5)) with the 2-D fan-in, like nn.Conv2d
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound
    assert tuple(TAdaConv2d(4, 6, 3, groups=2, bias=True).bias.shape) == (1, 1, 6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kernel_size=(3, 3, 3)), "temporal entry 1"),
        (dict(kernel_size=3, stride=(2, 1, 1)), "temporal entry 1"),
        (dict(kernel_size=3, padding=(1, 1, 1)), "temporal entry 0"),
        (dict(kernel_size=3, cal_dim="cboth"), "cal_dim"),
        (dict(kernel_size=3, groups=3), "divisible"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TAdaConv2d(4, 4, **kwargs)


def test_alpha_shape_errors():
    conv = TAdaConv2d(4, 6, 3, padding=1)
    with pytest.raises(ValueError, match="alpha must have shape"):
        conv(torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 2, 1, 1))
    with pytest.raises(ValueError, match=r"\(2, 4, 3, 1, 1\) for x of shape \(2, 4, 3, 5, 5\).*got \(2, 6, 3, 1, 1\)"):
        conv(torch.randn(2, 4, 3, 5, 5), torch.randn(2, 6, 3, 1, 1))  # the 5-D shapes the caller gave
    with pytest.raises(ValueError, match="alpha must have shape"):
        conv(torch.randn(6, 4, 5, 5), torch.randn(6, 6))  # cin needs Cin channels
    with pytest.raises(ValueError, match="4-D x"):
        tada_conv2d(torch.randn(4, 5, 5), torch.randn(4, 4), torch.randn(6, 4, 3, 3))


# (B, T, H, W, c_in, c_out, kernel, stride, padding, dilation, groups)
GRID_3D = [
    (2, 5, 7, 6, 4, 6, (3, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
    (1, 6, 8, 7, 4, 4, (3, 1, 1), (2, 1, 1), (1, 0, 0), (1, 1, 1), 2),
    (2, 7, 6, 6, 6, 3, (3, 3, 3), (1, 2, 2), (2, 1, 1), (2, 1, 1), 3),
    (1, 4, 5, 5, 2, 4, (2, 3, 3), (1, 1, 1), (0, 1, 1), (1, 1, 1), 1),
    (2, 3, 5, 6, 3, 3, (5, 3, 3), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1),
]


@pytest.mark.parametrize("cal_dim", ["cin", "cout"])
@pytest.mark.parametrize("case", GRID_3D)
def test_tadaconv3d_equals_reference(case, cal_dim):
    b, t, h, w, c_in, c_out, k, s, p, d, g = case
    torch.manual_seed(_case_seed(case, cal_dim))
    conv = TAdaConv3d(c_in, c_out, k, stride=s, padding=p, dilation=d, groups=g, bias=True, cal_dim=cal_dim).double()
    x = torch.randn(b, c_in, t, h, w, dtype=torch.float64, requires_grad=True)
    t_out = conv.output_frames(t)
    alpha = (torch.randn(b, c_in if cal_dim == "cin" else c_out, t_out, 1, 1, dtype=torch.float64) + 1).requires_grad_()
    out = conv(x, alpha)
    ref = tada_conv3d_reference(x, alpha, conv.weight, conv.bias, stride=s, padding=p, dilation=d, groups=g,
                                cal_dim=cal_dim)
    assert out.shape == ref.shape == (b, c_out, t_out, *ref.shape[3:])
    torch.testing.assert_close(out, ref, **TOL)
    params = [x, alpha, conv.weight, conv.bias]
    for got, want in zip(_grads(out, params, 2), _grads(ref, params, 2)):
        torch.testing.assert_close(got, want, **TOL)


def test_tadaconv3d_alpha_one_is_conv3d():
    torch.manual_seed(3)
    conv = TAdaConv3d(3, 5, (3, 3, 3), padding=(1, 1, 1)).double()
    x = torch.randn(2, 3, 4, 6, 6, dtype=torch.float64)
    out = conv(x, torch.ones(2, 3, 4, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(out, F.conv3d(x, conv.weight[0, 0], padding=1), **TOL)
