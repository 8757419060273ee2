"""Small layers of the TAdaConvV2 family (channels-first LayerNorm, QuickGELU, the 3x1x1 temporal
pool) and the video/frames layout change every frame-wise op and network uses.

* :func:`video_to_frames` / :func:`frames_to_video`: (B, C, T, H, W) <-> (B*T, C, H, W), the layout
  in which a kernel of temporal size 1 is a 2-D conv over frames.

* :class:`LayerNormChannelsFirst` normalises over dim 1 of (B, C, ...) tensors (biased variance,
  eps 1e-6 as every V2 LayerNorm): ``w[c] * (x - mean_c) / sqrt(var_c + eps) + b[c]``.
* :class:`QuickGELU`: ``x * sigmoid(1.702 * x)``, the activation used throughout V2 (there is no
  exact-erf GELU in these networks).
* :func:`temporal_avg_pool3`: ``AvgPool3d((3, 1, 1), stride 1, padding (1, 0, 0))`` with
  ``count_include_pad=True``, i.e. zero padding in time and edge frames divided by 3 (a constant 1
  becomes 2/3, 1, ..., 1, 2/3). It is computed as shifted adds along any time axis, so it works on
  (B, C, T, H, W) videos and on (B, T, ...) frame-major views alike, keeps the memory layout, and
  is defined for every length T >= 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LayerNormChannelsFirst", "QuickGELU", "frames_to_video", "is_exporting", "quick_gelu",
           "temporal_avg_pool3", "video_to_frames"]


def is_exporting() -> bool:
    """True while a graph is being recorded for export: TorchScript tracing (the TorchScript ONNX
    exporter) or ``torch.export`` (the exported-program format and the dynamo ONNX exporter)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def video_to_frames(x: Tensor, *, channels_last: bool = False) -> Tensor:
    """(B, C, T, H, W) -> (B*T, C, H, W) in one copy, channels-last when asked."""
    b, c, t, h, w = x.shape
    if channels_last:
        return x.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def frames_to_video(x: Tensor, num_frames: int) -> Tensor:
    """(B*T, C, H, W) -> (B, C, T, H, W) as a view (no copy)."""
    n, c, h, w = x.shape
    return x.view(n // num_frames, num_frames, c, h, w).transpose(1, 2)


def quick_gelu(x: Tensor) -> Tensor:
    """``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


class QuickGELU(nn.Module):
    """Module form of :func:`quick_gelu`."""

    def forward(self, x: Tensor) -> Tensor:
        return quick_gelu(x)


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over dim 1 of a (B, C, *) tensor; parameters ``weight`` (C,) = 1 and ``bias`` (C,) = 0.

    Computed as ``F.layer_norm`` on a channels-last view: the same function as the explicit
    mean/variance formula (they differ only by float rounding).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"LayerNormChannelsFirst({self.num_channels}) got input of shape {tuple(x.shape)}")
        y = F.layer_norm(x.movedim(1, -1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, channels_first"


def temporal_avg_pool3(x: Tensor, *, dim: int = 2) -> Tensor:
    """Mean of frames t-1, t, t+1 along ``dim`` with zeros beyond the ends, always divided by 3.

    ``x / 3`` plus the two shifted thirds added in place into slices of that fresh tensor: three
    passes over memory, nothing kept for the backward (autograd and torch.export handle the
    in-place slice updates).
    """
    dim = dim % x.dim()
    frames = x.shape[dim]
    if torch.jit.is_tracing():  # a traced graph (the TorchScript ONNX exporter) mis-records in-place slice updates
        padded = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [1, 1])
        return (padded.narrow(dim, 0, frames) + padded.narrow(dim, 1, frames) + padded.narrow(dim, 2, frames)) / 3.0
    third = 1.0 / 3.0
    out = x * third
    if frames > 1:
        out.narrow(dim, 1, frames - 1).add_(x.narrow(dim, 0, frames - 1), alpha=third)
        out.narrow(dim, 0, frames - 1).add_(x.narrow(dim, 1, frames - 1), alpha=third)
    return out
