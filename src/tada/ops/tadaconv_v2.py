"""TAdaConvV2: a per-frame calibrated 2-D convolution with calibrated bias, computed as a plain conv.

For sample b and frame t the official op convolves frame x[b, :, t] with the kernel
``W_bt = alpha_w[b, :, t] * W`` (scaled along the input channels for ``cal_dim="cin"``, along the
output channels for ``"cout"``) and adds the bias ``alpha_b[b, :, t] * beta`` (or ``beta`` when no
bias calibration is given). The official code materialises the B*T kernels and runs one grouped
convolution. Scaling commutes with the convolution, so this module computes the same function as

* ``cout``: ``conv2d(x, W) * alpha_w + alpha_b * beta``,
* ``cin``:  ``conv2d(x * alpha_w, W) + alpha_b * beta``,

over the (B*T, C, H, W) frames with the one shared kernel. For depthwise convs (groups = Cin =
Cout) the two coincide. :func:`tada_conv2d_v2_grouped_reference` keeps the per-frame-kernel form as
the definition to test against and the formulation to benchmark against.

The module also holds the optional parts of the official op: an internal routing function
(``rf_func``, a :class:`~tada.ops.routing_v2.RouteFuncAttention` over Cout channels without the
"+1", so its calibration starts random) and an internal temporal aggregation
``bn_a(y) + bn_b(avgpool3(y))`` with ``bn_b`` starting at zero. Inputs come in three layouts:
(B, C, T, H, W) videos, (B*T, C, H, W) frames, and (L, B*T, C) tokens of a square h x w grid
(h = w = floor(sqrt(L)), rows ordered i*w + j, the batch ordered b*T + t). Parameters keep the
official layout (``weight`` (1, 1, Cout, Cin/groups, kh, kw), ``bias`` (1, 1, Cout)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tada.ops.primitives import frames_to_video, temporal_avg_pool3, video_to_frames
from tada.ops.routing import TemporalConvWeight
from tada.ops.routing_v2 import RouteFuncAttention
from tada.ops.tadaconv import _check_cal_dim, _init_conv_geometry

__all__ = ["TAdaConv2dV2", "tada_conv2d_v2", "tada_conv2d_v2_grouped_reference"]

Alpha = Tensor | Sequence[Tensor | None]


def _split_alpha(alpha: Alpha) -> tuple[Tensor, Tensor | None]:
    """A tensor is alpha_w alone; a pair/list is (alpha_w, alpha_b), alpha_b possibly None."""
    if isinstance(alpha, Tensor):
        return alpha, None
    alpha = tuple(alpha)
    if len(alpha) == 1:
        return alpha[0], None  # type: ignore[return-value]
    if len(alpha) != 2 or not isinstance(alpha[0], Tensor):
        raise ValueError(f"alpha must be a tensor or a pair (alpha_w, alpha_b), got {len(alpha)} items")
    return alpha[0], alpha[1]


def _check_frames_alpha(alpha: Tensor, frames: int, channels: int, name: str) -> Tensor:
    if alpha.dim() == 2:
        alpha = alpha[:, :, None, None]
    if tuple(alpha.shape) != (frames, channels, 1, 1):
        raise ValueError(
            f"{name} must have shape ({frames}, {channels}, 1, 1) for frames input, got {tuple(alpha.shape)}")
    return alpha


def tada_conv2d_v2(
    x: Tensor,
    alpha_w: Tensor,
    alpha_b: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    cal_dim: str = "cout",
) -> Tensor:
    """TAdaConvV2 on frames: x (N, Cin, H, W), alpha_w (N, C[, 1, 1]), alpha_b (N, Cout[, 1, 1]) or None.

    ``weight`` is (Cout, Cin/groups, kh, kw), ``bias`` (Cout,) or None. C is Cin for ``cin`` and
    Cout for ``cout``. alpha_b is ignored without a bias (as in the official op).
    """
    _check_cal_dim(cal_dim)
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"tada_conv2d_v2 expects 4-D x and weight, got {x.dim()}-D and {weight.dim()}-D")
    n = x.shape[0]
    c_out = weight.shape[0]
    alpha_w = _check_frames_alpha(alpha_w, n, x.shape[1] if cal_dim == "cin" else c_out, "alpha_w").to(x.dtype)
    if cal_dim == "cin":
        out = F.conv2d(x * alpha_w, weight, None, stride, padding, dilation, groups)
    else:
        out = F.conv2d(x, weight, None, stride, padding, dilation, groups)
        if bias is not None and alpha_b is not None:  # out * alpha_w + alpha_b * beta in one pass
            alpha_b = _check_frames_alpha(alpha_b, n, c_out, "alpha_b").to(x.dtype)
            return torch.addcmul(alpha_b * bias.view(1, -1, 1, 1), out, alpha_w)
        out = out * alpha_w
    if bias is None:
        return out
    if alpha_b is None:
        return out + bias.view(1, -1, 1, 1)
    alpha_b = _check_frames_alpha(alpha_b, n, c_out, "alpha_b").to(x.dtype)
    return out + alpha_b * bias.view(1, -1, 1, 1)  # (N, C, 1, 1) small tensor, one pass over out


class TAdaConv2dV2(nn.Module):
    """Temporally-adaptive 2-D convolution, version 2 (calibrated bias, optional internal routing).

    ``forward(x, alpha=None, *, num_frames=None)``: x is (B, Cin, T, H, W), frames (B*T, Cin, H, W)
    or tokens (L, B*T, Cin); the output has the same layout. ``alpha`` is alpha_w or
    (alpha_w, alpha_b) in the routing function's layout for that input ((B, C, T, 1, 1) for
    videos, (B*T, C, 1, 1) for frames and tokens); None computes it with the internal routing
    function. Frames and tokens need ``num_frames`` (the argument, or the one given at
    construction) to find the clips.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        cal_dim: str = "cin",
        *,
        num_frames: int | None = None,
        rf_r: int = 4,
        rf_k: Sequence[int] = (3, 3),
        head_dim: int = 64,
        internal_rf_func: bool = True,
        internal_temp_aggr: bool = True,
    ) -> None:
        super().__init__()
        _init_conv_geometry(self, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                            stride=stride, padding=padding, dilation=dilation, groups=groups, cal_dim=cal_dim)
        if internal_rf_func and in_channels != out_channels:
            raise ValueError(
                f"the internal routing function reads the input with out_channels channels: in_channels "
                f"({in_channels}) must equal out_channels ({out_channels})"
            )
        self.num_frames = num_frames
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(1, 1, out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(1, 1, out_channels)) if bias else None
        self.rf_func = (
            RouteFuncAttention(
                out_channels, ratio=rf_r, kernels=tuple(rf_k), with_bias_cal=bias, zero_init_cal=False,
                head_dim=head_dim,
            )
            if internal_rf_func
            else None
        )
        if internal_temp_aggr:
            self.bn_a = nn.BatchNorm3d(out_channels)
            self.bn_b = nn.BatchNorm3d(out_channels)
        else:
            self.bn_a = self.bn_b = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official construction: trunc-normal(0.02) weights, zero biases, ``bn_b`` at zero.

        The routing function's temporal convs get trunc-normal(0.02) / zero bias too, unless they
        are flagged ``skip_init``; its LayerNorms keep 1 / 0.
        """
        nn.init.trunc_normal_(self.weight, std=0.02)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.rf_func is not None:
            for layer in self.rf_func.modules():
                if isinstance(layer, TemporalConvWeight) and not getattr(layer, "skip_init", False):
                    nn.init.trunc_normal_(layer.weight, std=0.02)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
        if self.bn_a is not None:
            self.bn_a.reset_parameters()
            self.bn_b.reset_parameters()
            nn.init.zeros_(self.bn_b.weight)
            self.bn_b.skip_init = True

    @property
    def weight_2d(self) -> Tensor:
        """The shared kernel as a (Cout, Cin/groups, kh, kw) view of the stored parameter."""
        return self.weight[0, 0]

    def forward_frames(self, x: Tensor, num_frames: int, alpha: Alpha | None = None) -> Tensor:
        """Frames x (B*T, Cin, H, W) -> (B*T, Cout, H', W'); alpha in the (B*T, C, 1, 1) layout."""
        if alpha is None:
            if self.rf_func is None:
                raise ValueError("TAdaConv2dV2 without an internal routing function needs alpha")
            alpha = self.rf_func(x, num_frames=num_frames)
        alpha_w, alpha_b = _split_alpha(alpha)
        y = self.calibrated_conv(x, num_frames, alpha_w, alpha_b)
        if self.bn_a is None:
            return y
        n, c, h, w = y.shape
        video = y.view(n // num_frames, num_frames, c, h, w).transpose(1, 2)  # (B, C, T, H, W) view
        out = self.bn_a(video) + self.bn_b(temporal_avg_pool3(video, dim=2))
        return out.transpose(1, 2).reshape(n, c, h, w)

    def calibrated_conv(self, x: Tensor, num_frames: int, alpha_w: Tensor, alpha_b: Tensor | None) -> Tensor:
        """The calibrated convolution alone, on frames, as one shared-kernel conv (see the module docstring)."""
        return tada_conv2d_v2(
            x, alpha_w, alpha_b, self.weight_2d, None if self.bias is None else self.bias.view(-1),
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
            cal_dim=self.cal_dim,
        )

    def forward(self, x: Tensor, alpha: Alpha | None = None, *, num_frames: int | None = None) -> Tensor:
        if x.dim() == 5:
            b, t = x.shape[0], x.shape[2]
            if alpha is not None:
                alpha = self._video_alpha_to_frames(alpha, b, t)
            return frames_to_video(self.forward_frames(video_to_frames(x), t, alpha), t)
        num_frames = self.num_frames if num_frames is None else num_frames
        if num_frames is None or x.dim() not in (3, 4):
            raise ValueError(
                f"TAdaConv2dV2 takes (B, C, T, H, W), or frames (B*T, C, H, W) / tokens (L, B*T, C) with "
                f"num_frames; got shape {tuple(x.shape)} and num_frames={num_frames}"
            )
        if x.dim() == 4:
            return self.forward_frames(x, num_frames, alpha)
        length, n, c = x.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"TAdaConv2dV2 tokens must form a square grid, got L={length} tokens")
        frames = x.permute(1, 2, 0).reshape(n, c, side, side)
        y = self.forward_frames(frames, num_frames, alpha)
        return y.flatten(2).permute(2, 0, 1)

    def _video_alpha_to_frames(self, alpha: Alpha, batch: int, frames: int) -> tuple[Tensor, Tensor | None]:
        """(B, C, T, 1, 1) calibrations -> (B*T, C, 1, 1)."""
        parts = []
        for name, a in zip(("alpha_w", "alpha_b"), _split_alpha(alpha), strict=True):
            if a is not None and (a.dim() != 5 or a.shape[0] != batch or a.shape[2] != frames or a.shape[3:] != (1, 1)):
                raise ValueError(
                    f"{name} must have shape (B, C, T, 1, 1) with B={batch}, T={frames}, got {tuple(a.shape)}")
            parts.append(None if a is None else a.transpose(1, 2).reshape(batch * frames, a.shape[1], 1, 1))
        return parts[0], parts[1]

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, cal_dim={self.cal_dim!r}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}, num_frames={self.num_frames}"


def tada_conv2d_v2_grouped_reference(
    x: Tensor,
    alpha_w: Tensor,
    alpha_b: Tensor | None,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    cal_dim: str = "cout",
) -> Tensor:
    """The official formulation: B*T calibrated kernels and biases, one grouped conv with groups*B*T groups.

    x (B, Cin, T, H, W), alpha_w (B, C, T, 1, 1), alpha_b (B, Cout, T, 1, 1) or None, weight
    (1, 1, Cout, Cin/groups, kh, kw), bias (1, 1, Cout) or None. Slow and memory-hungry: the
    definition to test against and the formulation to benchmark against.
    """
    _check_cal_dim(cal_dim)
    b, c_in, t, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape[2:]
    x_fold = x.permute(0, 2, 1, 3, 4).reshape(1, b * t * c_in, h, w)
    a = alpha_w.permute(0, 2, 1, 3, 4).reshape(b * t, -1)
    w0 = weight.view(1, c_out, c_in_g, kh, kw)
    if cal_dim == "cin":
        a_in = a.view(b * t, groups, 1, c_in_g).expand(b * t, groups, c_out // groups, c_in_g)
        kernels = w0 * a_in.reshape(b * t, c_out, c_in_g, 1, 1)
    else:
        kernels = w0 * a.view(b * t, c_out, 1, 1, 1)
    frame_bias = None
    if bias is not None:
        frame_bias = bias.view(1, c_out).expand(b * t, c_out)
        if alpha_b is not None:
            frame_bias = frame_bias * alpha_b.permute(0, 2, 1, 3, 4).reshape(b * t, c_out)
        frame_bias = frame_bias.reshape(-1)
    out = F.conv2d(
        x_fold, kernels.reshape(b * t * c_out, c_in_g, kh, kw), frame_bias, stride, padding, dilation, groups * b * t
    )
    return out.view(b, t, c_out, out.shape[-2], out.shape[-1]).permute(0, 2, 1, 3, 4)
