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

__all__ = ["RouteFuncMLP", "TemporalConvWeight", "track_calibration_range"]


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
        self.range_momentum: float | None = None  # set by track_range(): the calibration-range clamp is on

    def init_weights(self) -> None:
        """The TAda2D init: Kaiming-normal (fan_out, relu) ``g`` and ``a`` with zero biases, BN gamma 1 /
        beta 0, and ``b`` zero, so that alpha == 1 and the TAdaConv starts as its plain conv."""
        for layer in (self.g, self.a):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.zeros_(self.b.weight)

    def track_range(self, momentum: float) -> None:
        """Keep running per-channel extremes of alpha in train mode and clamp alpha to them in eval mode.

        In eval mode every BN is a fixed affine map, so alpha grows in proportion to the scale of the
        block's input; the TAdaConv output then grows with its square, and the next block squares
        that again. A clip whose features are a little larger than training ones can thereby reach
        1e60 and beyond (inf/NaN in float32) where train mode, which renormalises every batch, stays
        finite. Clamping each channel of alpha to the range it takes in training bounds the loop.
        The extremes are exponential moving averages (``momentum``, as a BN's running statistics) of
        each batch's per-channel min and max, held in the buffers ``alpha_low`` / ``alpha_high``.
        Until a first training batch, and after loading a state dict without them (e.g. an official
        checkpoint), they are -inf / +inf: the clamp is the identity, the function the official one.
        """
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"calibration-range momentum must be in (0, 1], got {momentum}")
        self.range_momentum = float(momentum)
        dtype = self.b.weight.dtype
        device = self.b.weight.device
        self.register_buffer("alpha_low", torch.full((self.out_channels,), -math.inf, dtype=dtype, device=device))
        self.register_buffer("alpha_high", torch.full((self.out_channels,), math.inf, dtype=dtype, device=device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.range_momentum is None:
            return
        for name, untracked in (("alpha_low", -math.inf), ("alpha_high", math.inf)):
            key = prefix + name
            if key in missing_keys:  # a state dict from a model without the clamp: untracked, no clamp
                missing_keys.remove(key)
                getattr(self, name).fill_(untracked)

    def _range(self, alpha: Tensor) -> Tensor:
        """Update the running extremes from alpha (..., C') in train mode; clamp alpha to them in eval mode."""
        if self.training:
            with torch.no_grad():
                flat = alpha.detach().reshape(-1, self.out_channels)
                for buf, batch in ((self.alpha_low, flat.amin(0)), (self.alpha_high, flat.amax(0))):
                    ema = buf + self.range_momentum * (batch - buf)
                    buf.copy_(torch.where(torch.isfinite(buf), ema, batch))
            return alpha
        return torch.maximum(torch.minimum(alpha, self.alpha_high), self.alpha_low)

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
            alpha = self.b(h) + 1.0
            return alpha if self.range_momentum is None else self._range(alpha)

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


def track_calibration_range(model: nn.Module, *, momentum: float = 0.1) -> int:
    """Turn on the calibration-range clamp (:meth:`RouteFuncMLP.track_range`) in every routing function of a model.

    Returns how many routing functions it reaches; a model without any is an error, since the
    setting would otherwise do nothing.
    """
    routes = [m for m in model.modules() if isinstance(m, RouteFuncMLP)]
    if not routes:
        raise ValueError(f"{type(model).__name__} has no RouteFuncMLP: the calibration-range clamp does not apply")
    for route in routes:
        route.track_range(momentum)
    return len(routes)
