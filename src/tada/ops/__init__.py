"""Temporally-adaptive convolution ops: pure torch, importing nothing from config or data code."""

from tada.ops.routing import RouteFuncMLP, TemporalConvWeight
from tada.ops.tadaconv import (
    TAdaConv2d,
    TAdaConv3d,
    tada_conv2d,
    tada_conv2d_grouped_reference,
    tada_conv3d_reference,
)

__all__ = [
    "RouteFuncMLP",
    "TAdaConv2d",
    "TAdaConv3d",
    "TemporalConvWeight",
    "tada_conv2d",
    "tada_conv2d_grouped_reference",
    "tada_conv3d_reference",
]
