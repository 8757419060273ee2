"""Frame-wise building blocks: official 3-D parameter layouts, 2-D compute over (B*T, C, H, W).

The official network stores every conv as a Conv3d with a (Cout, Cin, 1, kh, kw) kernel. A kernel
with temporal size 1 is a 2-D conv applied to each frame, so these modules keep the official
parameter shape (checkpoints stay interchangeable) and call ``F.conv2d`` on a view of it over
frames, where cuDNN / oneDNN have their fastest (channels-last) paths. BatchNorm2d over B*T frames
computes exactly what BatchNorm3d computes over (B, C, T, H, W) and has the same state_dict keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tada.ops.primitives import frames_to_video, is_exporting, video_to_frames

__all__ = ["FrameConv", "TemporalAvgPool", "frames_to_video", "video_to_frames"]


class FrameConv(nn.Module):
    """A Conv3d with temporal kernel 1 (official weight (Cout, Cin/groups, 1, kh, kw)), run as conv2d on frames."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 1,
        *,
        stride: int = 1,
        padding: int | Sequence[int] | None = None,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = (stride, stride)
        self.padding = (kh // 2, kw // 2) if padding is None else (
            (padding, padding) if isinstance(padding, int) else tuple(padding)
        )
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 1, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv3d's default init; the network init replaces it, as in the official code."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight_2d(self) -> Tensor:
        return self.weight.squeeze(2)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight_2d, self.bias, self.stride, self.padding, 1, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size=(1, {self.kernel_size[0]}, {self.kernel_size[1]}), "
            f"stride=(1, {self.stride[0]}, {self.stride[1]}), padding=(0, {self.padding[0]}, {self.padding[1]}), "
            f"bias={self.bias is not None}"
        )


def _temporal_pool(v: Tensor, kernel_size: int) -> Tensor:
    """sum_{|d| <= k//2} v[:, t + d] / k over (B, T, ...) with zero padding: one pass per offset."""
    scale = 1.0 / kernel_size
    out = v * scale
    for d in range(1, kernel_size // 2 + 1):
        out[:, d:].add_(v[:, :-d], alpha=scale)
        out[:, :-d].add_(v[:, d:], alpha=scale)
    return out


class _TemporalPoolFn(torch.autograd.Function):
    """The zero-padded, count_include_pad average is a symmetric linear map: its backward is itself."""

    @staticmethod
    def forward(ctx, v: Tensor, kernel_size: int) -> Tensor:  # type: ignore[override]
        ctx.kernel_size = kernel_size
        return _temporal_pool(v, kernel_size)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _temporal_pool(grad, ctx.kernel_size), None


def _frames_major(x: Tensor, num_frames: int) -> tuple[Tensor, bool]:
    """View frames (B*T, C, H, W) as (B, T, rest) in memory order; True if channels-last."""
    n, c, h, w = x.shape
    if x.is_contiguous():
        return x.view(n // num_frames, num_frames, c * h * w), False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(n // num_frames, num_frames, h * w * c), True
    return x.contiguous().view(n // num_frames, num_frames, c * h * w), False


class TemporalAvgPool(nn.Module):
    """AvgPool3d((k, 1, 1), stride 1, padding k//2, count_include_pad=True) on frames (B*T, C, H, W).

    Edge frames are divided by k with zero padding, as in the official block. Computed
    as k shifted adds over the frames' memory, so the layout (channels-last or not) is kept and no
    pooling kernel is needed (CPU avg_pool3d would drop channels-last). While the model is being
    exported, :meth:`forward_export` computes the same values with one pooling op.
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"temporal pool kernel must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        if self.kernel_size == 1:
            return x
        if is_exporting():
            return self.forward_export(x, num_frames)
        n, c, h, w = x.shape
        v, channels_last = _frames_major(x, num_frames)
        y = _TemporalPoolFn.apply(v, self.kernel_size)
        if channels_last:
            return y.view(n, h, w, c).permute(0, 3, 1, 2)
        return y.view(n, c, h, w)

    def forward_export(self, x: Tensor, num_frames: int) -> Tensor:
        """The same pool as one 5-D AveragePool (k, 1, 1) between two transposes, for exporters.

        The shifted adds into slices are scatter ops in a recorded graph, which the TorchScript
        ONNX exporter mistranslates; onnxruntime also runs this form about 10x faster than the
        transpose-free (B, 1, T, C*H*W) 2-D one, whose very wide rows its pooling kernel handles badly.
        """
        if self.kernel_size == 1:
            return x
        k = self.kernel_size
        n, c, h, w = x.shape
        v = x.reshape(n // num_frames, num_frames, c, h, w).transpose(1, 2)  # (B, C, T, H, W)
        pad = k // 2
        if num_frames < k:  # the pooling op wants T >= k before its own padding: pad explicitly
            v, pad = F.pad(v, (0, 0, 0, 0, pad, pad)), 0
        pooled = F.avg_pool3d(v, (k, 1, 1), stride=1, padding=(pad, 0, 0), count_include_pad=True)
        return pooled.transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"kernel_size=({self.kernel_size}, 1, 1), count_include_pad=True"
