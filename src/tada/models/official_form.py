"""The official formulation of TAdaConvV2 inside a built model, for speed comparisons.

The official code materialises one calibrated kernel per sample and frame and runs a grouped
convolution with B*T groups (``tada_conv2d_v2_grouped_reference``). Our ``TAdaConv2dV2``
computes the same function as one shared convolution whose output is scaled. To measure what
that saves, :func:`to_official_form` swaps every TAdaConv2dV2 of a model for
:class:`OfficialFormTAdaConv2dV2`, which holds the same parameters and submodules (the state dict
is unchanged) and computes the convolution the official way.
"""

from __future__ import annotations

from torch import Tensor, nn

from tada.ops.primitives import temporal_avg_pool3
from tada.ops.tadaconv_v2 import (
    TAdaConv2dV2,
    _split_alpha,
    tada_conv2d_v2_grouped_reference,
)

__all__ = ["OfficialFormTAdaConv2dV2", "to_official_form"]


class OfficialFormTAdaConv2dV2(nn.Module):
    """A TAdaConv2dV2's parameters, computed with per-frame kernels in one grouped convolution."""

    def __init__(self, conv: TAdaConv2dV2) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.rf_func, self.bn_a, self.bn_b = conv.rf_func, conv.bn_a, conv.bn_b
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.groups, self.cal_dim, self.num_frames = conv.groups, conv.cal_dim, conv.num_frames
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels

    def forward(self, x: Tensor, alpha=None) -> Tensor:
        """Video (B, Cin, T, H, W) -> (B, Cout, T, H', W'); alpha as the routing function returns it for videos."""
        if alpha is None:
            alpha = self.rf_func(x)
        alpha_w, alpha_b = _split_alpha(alpha)
        y = tada_conv2d_v2_grouped_reference(
            x, alpha_w, alpha_b, self.weight, self.bias, stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=self.groups, cal_dim=self.cal_dim,
        )
        if self.bn_a is None:
            return y
        return self.bn_a(y) + self.bn_b(temporal_avg_pool3(y, dim=2))

    def forward_frames(self, x: Tensor, num_frames: int, alpha=None) -> Tensor:
        """Frames (B*T, Cin, H, W) -> (B*T, Cout, H', W'); alpha in the (B*T, C, 1, 1) layout."""
        n, c, h, w = x.shape
        video = x.view(n // num_frames, num_frames, c, h, w).transpose(1, 2)
        if alpha is not None:
            alpha = [None if a is None else a.view(n // num_frames, num_frames, -1, 1, 1).transpose(1, 2)
                     for a in _split_alpha(alpha)]
        y = self.forward(video, alpha)
        return y.transpose(1, 2).reshape(n, y.shape[1], *y.shape[3:])


def to_official_form(model: nn.Module) -> int:
    """Swap every TAdaConv2dV2 of ``model`` for its official-formulation twin, in place; returns the count."""
    swapped = 0
    for owner in list(model.modules()):
        for name, child in list(owner.named_children()):
            if isinstance(child, TAdaConv2dV2):
                setattr(owner, name, OfficialFormTAdaConv2dV2(child))
                swapped += 1
    return swapped
