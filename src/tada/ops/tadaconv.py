"""Temporally-adaptive convolutions (TAdaConv), computed as plain convolutions.

A TAdaConv2d uses, for every sample b and frame t, the kernel ``W_bt = alpha[b, :, t] * W``,
scaled along the input channels (``cal_dim="cin"``) or the output channels (``"cout"``).
The official code materialises all B*T kernels and runs one grouped convolution with B*T groups,
which is slow and memory-heavy. Scaling commutes with the convolution, so this module computes the exact
same function as

* ``cin``:  ``conv2d(x * alpha, W)``  (scale each frame's input channels, then one shared conv),
* ``cout``: ``conv2d(x, W) * alpha``,

over the (B*T, C, H, W) frames, with no per-frame kernels. The grouped form is kept only as the
test reference (:func:`tada_conv2d_grouped_reference`). Parameters keep the official layout
(``weight`` of shape (1, 1, Cout, Cin/groups, kh, kw)) so official checkpoints load unchanged.

Layouts: 5-D tensors are (B, C, T, H, W) as in the official code; 4-D tensors are frames
(B*T, C, H, W), which is what the networks use internally (channels-last friendly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tada.ops.primitives import frames_to_video, video_to_frames

__all__ = [
    "TAdaConv2d",
    "TAdaConv3d",
    "tada_conv2d",
    "tada_conv2d_grouped_reference",
    "tada_conv3d_reference",
]

_CAL_DIMS = ("cin", "cout")


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """Accept an int, a spatial pair, or the official 3-tuple (t, h, w) whose t must be trivial."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) == 2:
        return value  # type: ignore[return-value]
    raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")


def _split_temporal(value: int | Sequence[int], name: str, trivial: int) -> tuple[int, int]:
    """Strip the official temporal entry (kernel 1, stride 1, padding 0, dilation 1) off a 3-tuple."""
    if not isinstance(value, int) and len(tuple(value)) == 3:
        t, h, w = (int(v) for v in value)
        if t != trivial:
            raise ValueError(
                f"TAdaConv2d {name} must have temporal entry {trivial} (it is a 2-D conv per frame), "
                f"got {tuple(value)}; use TAdaConv3d for a temporal kernel"
            )
        return (h, w)
    return _pair(value, name)


def _check_cal_dim(cal_dim: str) -> None:
    if cal_dim not in _CAL_DIMS:
        raise ValueError(f"cal_dim must be one of {_CAL_DIMS}, got {cal_dim!r}")


def _init_conv_geometry(
    module: nn.Module,
    *,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    dilation: int | Sequence[int],
    groups: int,
    cal_dim: str,
) -> None:
    """Check and store a per-frame 2-D TAdaConv's geometry and its official (1, 1, Cout, Cin/groups, kh, kw)
    weight and (1, 1, Cout) bias layout (parameters created by the caller)."""
    _check_cal_dim(cal_dim)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
            f"by groups ({groups})"
        )
    module.in_channels = in_channels
    module.out_channels = out_channels
    module.kernel_size = _split_temporal(kernel_size, "kernel_size", 1)
    module.stride = _split_temporal(stride, "stride", 1)
    module.padding = _split_temporal(padding, "padding", 0)
    module.dilation = _split_temporal(dilation, "dilation", 1)
    module.groups = groups
    module.cal_dim = cal_dim


def _frames_alpha(alpha: Tensor, frames: int, channels: int) -> Tensor:
    """Bring a frames-layout calibration to (N, C, 1, 1); accepts (N, C) or (N, C, 1, 1)."""
    if alpha.dim() == 2:
        alpha = alpha[:, :, None, None]
    if alpha.dim() != 4 or alpha.shape[0] != frames or alpha.shape[1] != channels:
        raise ValueError(
            f"alpha must have shape ({frames}, {channels}) or ({frames}, {channels}, 1, 1) "
            f"for frames input, got {tuple(alpha.shape)}"
        )
    return alpha


def tada_conv2d(
    x: Tensor,
    alpha: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    cal_dim: str = "cin",
    inplace: bool = False,
) -> Tensor:
    """TAdaConv2d on frames: x (N, Cin, H, W), alpha (N, C) or (N, C, 1, 1), weight 4-D.

    ``C`` is Cin for ``cin`` and Cout for ``cout``. The bias (Cout,) is shared by all frames and
    is not calibrated. Exactly the per-frame-kernel definition, computed as one plain conv.
    ``inplace`` (cin, inference only): scale x in place instead of allocating a scaled copy; x
    is overwritten, so use it only when nothing needs x afterwards and no gradient is recorded.
    """
    _check_cal_dim(cal_dim)
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"tada_conv2d expects 4-D x and weight, got {x.dim()}-D and {weight.dim()}-D")
    # alpha is cast to x's dtype: under autocast (bf16 x, fp32 alpha from the routing function)
    # it is rounded to bf16 before the product. A product at fp32 precision cut the conv's bf16
    # error by about 25% but made the op 1.5x (upcast) to 12x (mixed-dtype kernel) slower on CPU.
    if cal_dim == "cin":
        alpha = _frames_alpha(alpha, x.shape[0], x.shape[1]).to(x.dtype)
        if inplace:
            if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
                raise RuntimeError("tada_conv2d(inplace=True) is for inference: gradients are being recorded")
            scaled = x.mul_(alpha)
        else:
            scaled = x * alpha
        return F.conv2d(scaled, weight, bias, stride, padding, dilation, groups)
    alpha = _frames_alpha(alpha, x.shape[0], weight.shape[0])
    out = F.conv2d(x, weight, None, stride, padding, dilation, groups) * alpha.to(x.dtype)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class TAdaConv2d(nn.Module):
    """Temporally-adaptive 2-D convolution: a per-frame kernel ``alpha[b, :, t] * W``.

    ``forward(x, alpha)`` takes either the official 5-D layout, x (B, Cin, T, H, W) with alpha
    (B, C, T, 1, 1) and returns (B, Cout, T, H', W'), or frames, x (B*T, Cin, H, W) with alpha
    (B*T, C[, 1, 1]) and returns (B*T, Cout, H', W'). C is Cin for ``cal_dim="cin"``, Cout for
    ``"cout"``. kernel_size/stride/padding/dilation accept ints, (h, w) pairs or the official
    (1, h, w) triples.
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
        bias: bool = False,
        cal_dim: str = "cin",
    ) -> None:
        super().__init__()
        _init_conv_geometry(self, in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                            stride=stride, padding=padding, dilation=dilation, groups=groups, cal_dim=cal_dim)
        kh, kw = self.kernel_size
        # Official layout (1, 1, Cout, Cin/groups, kh, kw): checkpoints load unchanged.
        self.weight = nn.Parameter(torch.empty(1, 1, out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(1, 1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Like nn.Conv2d: Kaiming-uniform with the 2-D fan-in (not the official 6-D fan-in).

        The networks re-initialise it (:meth:`tada.models.resnet.TAda2DBlock.init_weights`); their
        default is the official 6-D fan-in.
        """
        w = self.weight.data[0, 0]
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight_2d(self) -> Tensor:
        """The kernel as a (Cout, Cin/groups, kh, kw) view of the stored parameter (any strides)."""
        return self.weight[0, 0]

    def forward(self, x: Tensor, alpha: Tensor, *, inplace: bool = False) -> Tensor:
        """``inplace``: frames input only; see :func:`tada_conv2d` (inference, x is overwritten)."""
        bias = None if self.bias is None else self.bias.view(-1)
        kwargs = dict(
            stride=self.stride, padding=self.padding, dilation=self.dilation,
            groups=self.groups, cal_dim=self.cal_dim,
        )
        if x.dim() == 4:
            return tada_conv2d(x, alpha, self.weight_2d, bias, inplace=inplace, **kwargs)
        if x.dim() != 5 or alpha.dim() != 5:
            raise ValueError(
                f"TAdaConv2d expects x (B, C, T, H, W) with alpha (B, C, T, 1, 1), or frames "
                f"(B*T, C, H, W); got x {tuple(x.shape)}, alpha {tuple(alpha.shape)}"
            )
        b, _, t = x.shape[:3]
        c = self.in_channels if self.cal_dim == "cin" else self.out_channels
        if tuple(alpha.shape) != (b, c, t, 1, 1):
            raise ValueError(f"alpha must have shape (B, C, T, 1, 1) = {(b, c, t, 1, 1)} for x of shape "
                             f"{tuple(x.shape)} (cal_dim={self.cal_dim!r}), got {tuple(alpha.shape)}")
        out = tada_conv2d(video_to_frames(x), alpha.transpose(1, 2).reshape(b * t, -1), self.weight_2d, bias,
                          **kwargs)
        return frames_to_video(out, t)

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, cal_dim={self.cal_dim!r}"
        )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + f", bias={self.bias is not None}"


class TAdaConv3d(nn.Module):
    """TAdaConv with a temporal kernel: ``y_t = sum_k conv2d(x_{t*st + k*dt - pt}, alpha_t * W_k)``.

    The calibration alpha (B, C, T_out, 1, 1) belongs to the output frame t and scales the whole
    (kt, kh, kw) kernel; temporal padding is zeros. Computed as a sum over the kt temporal
    offsets of plain frame-wise convs (no unfolded copy of the input). The weight is stored as
    (1, 1, Cout, Cin/groups, kt, kh, kw). Input x is (B, Cin, T, H, W).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int] = (1, 1, 1),
        padding: Sequence[int] = (0, 0, 0),
        dilation: Sequence[int] = (1, 1, 1),
        groups: int = 1,
        bias: bool = False,
        cal_dim: str = "cin",
    ) -> None:
        super().__init__()
        _check_cal_dim(cal_dim)
        for name, v in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding), ("dilation", dilation)):
            if isinstance(v, int) or len(tuple(v)) != 3:
                raise ValueError(f"TAdaConv3d {name} must be a triple (t, h, w), got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = tuple(int(v) for v in kernel_size)
        self.stride = tuple(int(v) for v in stride)
        self.padding = tuple(int(v) for v in padding)
        self.dilation = tuple(int(v) for v in dilation)
        self.groups = groups
        self.cal_dim = cal_dim
        self.weight = nn.Parameter(torch.empty(1, 1, out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(1, 1, out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Like nn.Conv3d: Kaiming-uniform with the 3-D fan-in."""
        w = self.weight.data[0, 0]
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = w[0].numel()
            nn.init.uniform_(self.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))

    def output_frames(self, frames: int) -> int:
        kt, st, pt, dt = self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]
        return (frames + 2 * pt - dt * (kt - 1) - 1) // st + 1

    def forward(self, x: Tensor, alpha: Tensor) -> Tensor:
        if x.dim() != 5 or alpha.dim() != 5:
            raise ValueError(f"TAdaConv3d expects 5-D x and alpha, got {tuple(x.shape)}, {tuple(alpha.shape)}")
        b, _, t_in = x.shape[:3]
        t_out = self.output_frames(t_in)
        cal_channels = self.in_channels if self.cal_dim == "cin" else self.out_channels
        if tuple(alpha.shape) != (b, cal_channels, t_out, 1, 1):
            raise ValueError(f"alpha must have shape {(b, cal_channels, t_out, 1, 1)}, got {tuple(alpha.shape)}")
        kt, st, pt, dt = self.kernel_size[0], self.stride[0], self.padding[0], self.dilation[0]
        w = self.weight[0, 0]
        xf = x.transpose(1, 2)  # (B, T, C, H, W) view
        af = alpha.transpose(1, 2).to(x.dtype)  # (B, T_out, C, 1, 1)
        out = None
        for k in range(kt):
            # Output frames t in [t0, t1) read input frame s = t*st + off, which must lie in [0, t_in).
            off = k * dt - pt
            t0 = max(0, (-off + st - 1) // st)
            t1 = min(t_out, (t_in - 1 - off) // st + 1)
            if t1 <= t0:
                continue
            nt = t1 - t0
            s0 = t0 * st + off
            xs = xf[:, s0 : s0 + (nt - 1) * st + 1 : st]  # (B, nt, C, H, W)
            if self.cal_dim == "cin":
                xs = xs * af[:, t0:t1]
            y = F.conv2d(
                xs.reshape(b * nt, *xs.shape[2:]), w[:, :, k], None,
                self.stride[1:], self.padding[1:], self.dilation[1:], self.groups,
            )
            y = y.view(b, nt, *y.shape[1:])
            if nt != t_out:  # zero contributions for the frames this offset does not reach
                y = F.pad(y, (0, 0, 0, 0, 0, 0, t0, t_out - t1))
            out = y if out is None else out + y
        if out is None:
            raise ValueError(f"TAdaConv3d: no temporal offset reaches the {t_in} input frames")
        if self.cal_dim == "cout":
            out = out * af
        if self.bias is not None:
            out = out + self.bias.view(1, 1, -1, 1, 1)
        return out.transpose(1, 2)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, cal_dim={self.cal_dim!r}, "
            f"bias={self.bias is not None}"
        )


# ------------------------------------------------------------------------------------------------
# References (tests only): the official per-frame-kernel definitions, computed the slow way.
# ------------------------------------------------------------------------------------------------
def tada_conv2d_grouped_reference(
    x: Tensor,
    alpha: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    cal_dim: str = "cin",
) -> Tensor:
    """The official formulation: materialise B*T kernels, one grouped conv with groups*B*T groups.

    x (B, Cin, T, H, W), alpha (B, C, T, 1, 1), weight (1, 1, Cout, Cin/groups, kh, kw),
    bias (1, 1, Cout) or None. Slow and memory-hungry; kept as the definition to test against.
    """
    _check_cal_dim(cal_dim)
    b, c_in, t, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape[2:]
    # Fold as (1, B*T*Cin, H, W) with frame-major blocks so that group g of frame n is contiguous.
    x_fold = x.permute(0, 2, 1, 3, 4).reshape(1, b * t * c_in, h, w)
    a = alpha.permute(0, 2, 1, 3, 4).reshape(b * t, -1)  # (B*T, C)
    w0 = weight.view(1, c_out, c_in_g, kh, kw)
    if cal_dim == "cin":
        # alpha indexes absolute input channels: output channel o of group g sees inputs g*Cin/g + i.
        a_in = a.view(b * t, groups, 1, c_in_g).expand(b * t, groups, c_out // groups, c_in_g)
        kernels = w0 * a_in.reshape(b * t, c_out, c_in_g, 1, 1)
    else:
        kernels = w0 * a.view(b * t, c_out, 1, 1, 1)
    out = F.conv2d(
        x_fold, kernels.reshape(b * t * c_out, c_in_g, kh, kw), None,
        stride, padding, dilation, groups * b * t,
    )
    out = out.view(b, t, c_out, out.shape[-2], out.shape[-1]).permute(0, 2, 1, 3, 4)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1, 1)
    return out


def tada_conv3d_reference(
    x: Tensor,
    alpha: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: Sequence[int] = (1, 1, 1),
    padding: Sequence[int] = (0, 0, 0),
    dilation: Sequence[int] = (1, 1, 1),
    groups: int = 1,
    cal_dim: str = "cin",
) -> Tensor:
    """Per (sample, output frame) conv3d with the calibrated kernel over the zero-padded window."""
    _check_cal_dim(cal_dim)
    kt = weight.shape[4]
    st, pt, dt = stride[0], padding[0], dilation[0]
    w0 = weight.view(weight.shape[2:])  # (Cout, Cin/g, kt, kh, kw)
    c_out, c_in_g = w0.shape[:2]
    xp = F.pad(x, (0, 0, 0, 0, pt, pt))
    t_out = (x.shape[2] + 2 * pt - dt * (kt - 1) - 1) // st + 1
    outs = []
    for bi in range(x.shape[0]):
        frames = []
        for t in range(t_out):
            a = alpha[bi, :, t, 0, 0]
            if cal_dim == "cin":
                scale = a.view(groups, 1, c_in_g).expand(groups, c_out // groups, c_in_g).reshape(c_out, c_in_g)
                k = w0 * scale[:, :, None, None, None]
            else:
                k = w0 * a.view(c_out, 1, 1, 1, 1)
            window = xp[bi : bi + 1, :, t * st : t * st + dt * (kt - 1) + 1]
            y = F.conv3d(window, k, None, (1, stride[1], stride[2]), (0, padding[1], padding[2]),
                         (dt, dilation[1], dilation[2]), groups)
            frames.append(y)
        outs.append(torch.cat(frames, dim=2))
    out = torch.cat(outs, dim=0)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1, 1)
    return out
