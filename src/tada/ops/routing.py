"""The calibration (routing) function of TAdaConv: per-frame channel weights from temporal context.

Semantics of the official ``RouteFuncMLP``::

    u     = spatial mean of x per frame            (B, C, T)
    gctx  = g(mean of x over T, H, W)              (B, C, 1)     g: 1x1 conv with bias
    h     = relu(bn(a(u + gctx)))                  (B, C/r, T)   a: temporal conv k0, bias
    alpha = b(h) + 1                               (B, C', T)    b: temporal conv k1, no bias, zero init

Parameters keep the official names and 5-D shapes (``g.weight`` (C, C, 1, 1, 1), ``a.weight``
(C/r, C, k0, 1, 1), ``b.weight`` (C', C/r, k1, 1, 1)). The computation runs on the tiny
time-major (B, T, C) tensor of spatial means, each temporal conv as one GEMM over a
zero-padded temporal unfold: no per-op layout copies, and no tiny cuDNN/oneDNN convolutions
(slow, odd-shaped calls on both CPU and GPU). It costs one spatial mean of x; nothing after
that is proportional to H*W. Unlike the official code, the BN takes the caller's eps/momentum
(the official one ignores the config's BN settings; see ``docs/design.md``).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RouteFuncMLP", "TemporalConvWeight"]


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast disabled where it is on (CPU, CUDA); nothing to do elsewhere (the meta device of FLOP counts)."""
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class TemporalConvWeight(nn.Module):
    """Holds a (Cout, Cin, k, 1, 1) conv weight (official Conv3d layout) applied as a 1-D conv over T."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal kernel size must be odd (same padding), got {kernel_size}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv3d's default init (the network init overrides it, as the official one does)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """Time-major x (B, T, Cin) -> (B, T, Cout), zero padding at both ends of T."""
        k = self.kernel_size
        w = self.weight.view(self.out_channels, self.in_channels * k)
        if k == 1:
            return F.linear(x, w, self.bias)
        b, t, c = x.shape
        padded = F.pad(x, (0, 0, k // 2, k // 2))
        if torch.jit.is_tracing():  # the TorchScript ONNX exporter cannot size an unfold: the same columns, stacked
            cols = torch.stack([padded[:, j : j + t] for j in range(k)], dim=-1)
        else:
            cols = padded.unfold(1, k, 1)  # (B, T, Cin, k): [b, t, c, j] = x[b, t + j - k//2, c]
        return F.linear(cols.reshape(b, t, c * k), w, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({self.kernel_size}, 1, 1), "
                f"bias={self.bias is not None}")


class RouteFuncMLP(nn.Module):
    """Calibration weights alpha for a TAdaConv from the frames of its input.

    ``forward(x)`` with x (B, C, T, H, W) returns alpha (B, C', T, 1, 1). ``forward(x, num_frames=T)``
    with frames x (B*T, C, H, W) returns alpha (B*T, C', 1, 1), the layout TAdaConv2d takes for
    frames. C' = ``out_channels`` (default C; give Cout for a ``cal_dim="cout"`` TAdaConv).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        ratio: int = 4,
        kernels: tuple[int, int] | list[int] = (3, 3),
        out_channels: int | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if len(kernels) != 2:
            raise ValueError(f"kernels must be two temporal kernel sizes (a, b), got {kernels!r}")
        hidden = in_channels // ratio
        if hidden < 1:
            raise ValueError(f"in_channels // ratio must be >= 1, got {in_channels} // {ratio}")
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.g = TemporalConvWeight(in_channels, in_channels, 1, bias=True)
        self.a = TemporalConvWeight(in_channels, hidden, int(kernels[0]), bias=True)
        self.bn = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.b = TemporalConvWeight(hidden, out_channels, int(kernels[1]), bias=False)
        nn.init.zeros_(self.b.weight)  # alpha == 1 at start

    def init_weights(self) -> None:
        """The TAda2D init: Kaiming-normal (fan_out, relu) ``g`` and ``a`` with zero biases, BN gamma 1 /
        beta 0, and ``b`` zero, so that alpha == 1 and the TAdaConv starts as its plain conv."""
        for layer in (self.g, self.a):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.zeros_(self.b.weight)

    def forward_pooled(self, u: Tensor) -> Tensor:
        """From time-major per-frame spatial means u (B, T, C) to alpha (B, T, C').

        Runs in the parameters' precision even under autocast: the tensors are tiny, and in bf16
        the BN over few, nearly equal per-frame means would amplify rounding errors (bf16 logits
        were 2.9e-2 off fp32 with a bf16 routing function, 1.0e-2 with this). The TAdaConv then
        rounds alpha to its input's dtype for the product.
        """
        with _autocast_off(u.device.type):
            u = u.to(self.g.weight.dtype)
            b, t, _ = u.shape
            gctx = self.g(u.mean(dim=1, keepdim=True))  # (B, 1, C): context of the whole clip
            h = self.a(u + gctx)  # (B, T, C/r)
            h = self.relu(self.bn(h.reshape(b * t, -1))).view(b, t, -1)  # BN over B*T, as BN3d over (B, C, T)
            return self.b(h) + 1.0

    def forward(self, x: Tensor, num_frames: int | None = None) -> Tensor:
        if x.dim() == 5:
            if num_frames is not None and num_frames != x.shape[2]:
                raise ValueError(f"num_frames={num_frames} disagrees with x of shape {tuple(x.shape)}")
            alpha = self.forward_pooled(x.mean(dim=(3, 4), dtype=self.g.weight.dtype).transpose(1, 2))
            return alpha.transpose(1, 2)[:, :, :, None, None]
        if x.dim() != 4 or num_frames is None:
            raise ValueError(
                f"RouteFuncMLP takes x (B, C, T, H, W), or frames (B*T, C, H, W) with num_frames; "
                f"got shape {tuple(x.shape)} and num_frames={num_frames}"
            )
        n, c, h, w = x.shape
        if num_frames < 1 or n % num_frames:
            raise ValueError(f"RouteFuncMLP: {n} frames do not split into clips of num_frames={num_frames}")
        # A sum scaled on the tiny result: its backward is a broadcast view that autograd adds in
        # place to x's other gradient, where a mean or pool backward would write a full tensor.
        u = x.sum(dim=(2, 3), dtype=self.g.weight.dtype).view(n // num_frames, num_frames, c) * (1.0 / (h * w))
        return self.forward_pooled(u).reshape(n, self.out_channels, 1, 1)
