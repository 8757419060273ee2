"""Temporally-adaptive convolution ops: pure torch, importing nothing from config or data code."""

from tada.ops.primitives import LayerNormChannelsFirst, QuickGELU, quick_gelu, temporal_avg_pool3
from tada.ops.routing import RouteFuncMLP, TemporalConvWeight, track_calibration_range
from tada.ops.routing_v2 import RouteFuncAttention, temporal_self_attention
from tada.ops.tadaconv import (
    TAdaConv2d,
    TAdaConv3d,
    tada_conv2d,
    tada_conv2d_grouped_reference,
    tada_conv3d_reference,
)
from tada.ops.tadaconv_v2 import TAdaConv2dV2, tada_conv2d_v2, tada_conv2d_v2_grouped_reference

__all__ = [
    "LayerNormChannelsFirst",
    "QuickGELU",
    "RouteFuncAttention",
    "RouteFuncMLP",
    "track_calibration_range",
    "TAdaConv2d",
    "TAdaConv2dV2",
    "TAdaConv3d",
    "TemporalConvWeight",
    "quick_gelu",
    "tada_conv2d",
    "tada_conv2d_grouped_reference",
    "tada_conv2d_v2",
    "tada_conv2d_v2_grouped_reference",
    "tada_conv3d_reference",
    "temporal_avg_pool3",
    "temporal_self_attention",
]
