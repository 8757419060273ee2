"""The TAdaConvV2 calibration (routing) function: temporal convs with a temporal self-attention residual.

Semantics (official ``RouteFuncwTransformer``), for x (B, C, T, H, W) and c = C // ratio::

    u       = spatial mean of x per frame                       (B, C, T)
    h       = quick_gelu(norm(a(u)))                            (B, c, T)    a: temporal conv k_a, bias
    h       = h + attn_out(MHSA(norm_transformer(h)))           self-attention over the T frames
    alpha_w = b(h)       [+ 1 if zero_init_cal]                 (B, C, T)    b: temporal conv k_b, no bias
    alpha_b = b_bias(h)  [+ 1 if zero_init_cal]                 only with bias calibration

The attention has c // head_dim heads. Its layout is the official one, which a textbook multi-head
attention does not reproduce:

* the 3c outputs of ``qkv_proj`` are indexed ``s*c + d*heads + j`` (s in q/k/v, d < head_dim,
  head j): heads are interleaved, the head index varies fastest;
* scores are scaled by ``c ** -0.5``, the whole reduced width, not ``head_dim ** -0.5``;
* head outputs are concatenated head-major (channel ``j*head_dim + d``) before ``attn_out``.

There is no dropout, mask or positional code. The LayerNorms (eps 1e-6) normalise over the c
channels of each frame. Parameters keep the official names and 5-D shapes: ``a.weight`` (c, C, k_a,
1, 1), ``qkv_proj.weight`` (3c, c, 1, 1, 1), ``attn_out.weight`` (c, c, 1, 1, 1), ``b.weight`` and
``b_bias.weight`` (C, c, k_b, 1, 1). As in :mod:`tada.ops.routing`, everything after the spatial
mean runs on the tiny time-major (B, T, C) tensor, each temporal conv as one GEMM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tada.ops.primitives import quick_gelu
from tada.ops.routing import TemporalConvWeight, _autocast_off

__all__ = ["RouteFuncAttention", "temporal_self_attention"]


def temporal_self_attention(qkv: Tensor, *, heads: int) -> Tensor:
    """Multi-head attention over frames with the official channel layout.

    qkv (B, T, 3c) in the interleaved layout above -> (B, T, c) with heads concatenated head-major.
    """
    b, t, three_c = qkv.shape
    c = three_c // 3
    head_dim = c // heads
    # (B, T, 3, head_dim, heads) -> (3, B, heads, T, head_dim)
    q, k, v = qkv.view(b, t, 3, head_dim, heads).permute(2, 0, 4, 1, 3).unbind(0)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (float(c) ** -0.5)
    out = torch.matmul(scores.softmax(dim=-1), v)  # (B, heads, T, head_dim)
    return out.transpose(1, 2).reshape(b, t, c)


class RouteFuncAttention(nn.Module):
    """Calibration factors for a TAdaConvV2 from the per-frame spatial means of its input.

    ``forward(x)`` with x (B, C, T, H, W) returns ``(alpha_w, alpha_b)`` of shape (B, C, T, 1, 1);
    ``forward(x, num_frames=T)`` with frames x (B*T, C, H, W) returns them as (B*T, C, 1, 1).
    ``alpha_b`` is None without bias calibration. ``zero_init_cal`` zeroes ``b``/``b_bias``, marks
    them ``skip_init`` and adds 1 to both outputs, so the calibration starts at exactly 1. Other
    parameters keep PyTorch's default init; enclosing networks re-initialise them.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        ratio: int = 4,
        kernels: tuple[int, int] | list[int] = (3, 3),
        with_bias_cal: bool = False,
        zero_init_cal: bool = True,
        head_dim: int = 64,
    ) -> None:
        super().__init__()
        if len(kernels) != 2:
            raise ValueError(f"kernels must be two temporal kernel sizes (a, b), got {kernels!r}")
        hidden = in_channels // ratio
        if hidden < 1:
            raise ValueError(f"in_channels // ratio must be >= 1, got {in_channels} // {ratio}")
        if head_dim < 1 or hidden % head_dim:
            raise ValueError(
                f"the routing width in_channels // ratio = {in_channels} // {ratio} = {hidden} must be a "
                f"positive multiple of head_dim ({head_dim})"
            )
        self.in_channels = in_channels
        self.hidden = hidden
        self.heads = hidden // head_dim
        self.zero_init_cal = zero_init_cal
        self.a = TemporalConvWeight(in_channels, hidden, int(kernels[0]), bias=True)
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.norm_transformer = nn.LayerNorm(hidden, eps=1e-6)
        self.qkv_proj = TemporalConvWeight(hidden, 3 * hidden, 1, bias=True)
        self.attn_out = TemporalConvWeight(hidden, hidden, 1, bias=True)
        self.b = TemporalConvWeight(hidden, in_channels, int(kernels[1]), bias=False)
        self.b_bias = TemporalConvWeight(hidden, in_channels, int(kernels[1]), bias=False) if with_bias_cal else None
        if zero_init_cal:
            for layer in (self.b, self.b_bias):
                if layer is not None:
                    layer.skip_init = True  # enclosing networks' init walks leave them to zero_init_calibration
            self.zero_init_calibration()

    def zero_init_calibration(self) -> None:
        """With ``zero_init_cal``, zero ``b`` and ``b_bias``: the calibration is exactly 1 (nothing otherwise)."""
        if self.zero_init_cal:
            for layer in (self.b, self.b_bias):
                if layer is not None:
                    nn.init.zeros_(layer.weight)

    @property
    def with_bias_cal(self) -> bool:
        return self.b_bias is not None

    def forward_pooled(self, u: Tensor) -> tuple[Tensor, Tensor | None]:
        """Time-major per-frame means u (B, T, C) -> (alpha_w, alpha_b), each (B, T, C) or None.

        Runs in the parameters' precision even under autocast (tiny tensors; the LayerNorms and
        the softmax over few frames would amplify half-precision rounding).
        """
        with _autocast_off(u.device.type):
            u = u.to(self.a.weight.dtype)
            h = quick_gelu(self.norm(self.a(u)))
            attn = temporal_self_attention(self.qkv_proj(self.norm_transformer(h)), heads=self.heads)
            h = h + self.attn_out(attn)
            alpha_w = self.b(h)
            alpha_b = None if self.b_bias is None else self.b_bias(h)
            if self.zero_init_cal:
                alpha_w = alpha_w + 1.0
                alpha_b = None if alpha_b is None else alpha_b + 1.0
            return alpha_w, alpha_b

    def forward(self, x: Tensor, num_frames: int | None = None) -> tuple[Tensor, Tensor | None]:
        if x.dim() == 5:
            if num_frames is not None and num_frames != x.shape[2]:
                raise ValueError(f"num_frames={num_frames} disagrees with x of shape {tuple(x.shape)}")
            alphas = self.forward_pooled(x.mean(dim=(3, 4), dtype=self.a.weight.dtype).transpose(1, 2))
            return tuple(None if a is None else a.transpose(1, 2)[:, :, :, None, None] for a in alphas)  # type: ignore[return-value]
        if x.dim() != 4 or num_frames is None:
            raise ValueError(
                f"RouteFuncAttention takes x (B, C, T, H, W), or frames (B*T, C, H, W) with num_frames; "
                f"got shape {tuple(x.shape)} and num_frames={num_frames}"
            )
        n, c = x.shape[:2]
        if num_frames < 1 or n % num_frames:
            raise ValueError(f"RouteFuncAttention: {n} frames do not split into clips of num_frames={num_frames}")
        u = x.mean(dim=(2, 3), dtype=self.a.weight.dtype).view(n // num_frames, num_frames, c)
        alphas = self.forward_pooled(u)
        return tuple(None if a is None else a.reshape(n, c, 1, 1) for a in alphas)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, hidden={self.hidden}, heads={self.heads}, "
            f"with_bias_cal={self.with_bias_cal}, zero_init_cal={self.zero_init_cal}"
        )
