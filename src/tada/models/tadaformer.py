"""TAdaFormer: a CLIP ViT over tubelets whose blocks gain temporally-adaptive (TAda) branches.

Module names and parameter shapes follow the official TAdaFormer, so ``state_dict()`` of
``tadaformer(...)`` at B/16 or L/14 has the official checkpoint's keys (489 / 969, and 825 /
1641 with the double TAda branch of the SSv2 models). Data flow of one ``TAdaFormerBlock`` on
the tokens x of every frame (class token first, then the h*w patches)::

    x ── + DP([0, tada(x[1:])]) ── + DP(attn(ln_1(.))) ── (+ DP([0, tada2(x[1:])])) ── + DP(mlp(ln_2(.)))

The TAda branch reads the raw residual stream (no LayerNorm before it), never updates the class
token, and is the only place where frames exchange information: ``attn`` is spatial, within one
frame. ``tada``: ``tada_pre_proj`` (W -> W/r per token, or a 3x1x1 temporal conv when the
branch is "temporally enhanced") -> ``tadaconv`` (depthwise 3x3 TAdaConv2dV2 with its own
routing function and BN temporal aggregation) -> QuickGELU -> ``tada_proj`` (W/r -> W, zero at
init, so the network starts as the image model applied to frames).

Tokens are kept batch-first, (B*T', L, W) with frames sample-major (row ``b*T' + t``), which is
the official (L, B*T', W) layout transposed: nn.MultiheadAttention's fast inference path needs
batch-first, and the patch tokens of a frame are then an (h, w, C) channels-last image for the
depthwise TAdaConv without a copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tada.models.resnet import VideoHead, VideoResNet
from tada.ops import QuickGELU, TAdaConv2dV2
from tada.ops.routing import TemporalConvWeight

__all__ = [
    "Mlp",
    "TAdaBlock",
    "TAdaBlockTempEnhanced",
    "TAdaFormer",
    "TAdaFormerBlock",
    "TokenTemporalConv",
    "VideoDropPath",
    "VisionTransformerBackbone",
    "tadaformer",
]

ROUTE_HEAD_DIM = 64  # the official TAdaFormer's routing-attention head size (not a config key there)


class VideoDropPath(nn.Module):
    """Stochastic depth per video: one Bernoulli(1 - p) per clip scales all its frames and tokens.

    The official "L(BT)C" mode: the increment of shape (B*T', L, W) is viewed as (B, T', L, W)
    and every element of clip b is multiplied by mask[b] / (1 - p) in training.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        batch = x.shape[0] // num_frames
        mask = torch.empty(batch, 1, device=x.device, dtype=x.dtype).bernoulli_(keep).div_(keep)
        return (x.reshape(batch, -1) * mask).view_as(x)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, mode=L(BT)C"


class TokenTemporalConv(nn.Module):
    """A Conv3d with kernel (k, 1, 1) and zero temporal padding k//2, applied to channels-last tokens.

    The weight keeps the official Conv3d shape (Cout, Cin, k, 1, 1); the input is (B, T, S, Cin)
    (S tokens per frame) and the output (B, T, S, Cout). Computed as one matrix product over the k
    zero-padded, shifted frames stacked along channels, so tokens never leave their channels-last
    layout (and the multiply-adds are those of the Conv3d, padding taps included).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, *, bias: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"temporal kernel must be odd and >= 1, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, 1, 1))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv3d's default init (the block's init replaces it)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        cout, cin, k = self.weight.shape[:3]
        if k == 1:
            return F.linear(x, self.weight.view(cout, cin), self.bias)
        frames, half = x.shape[1], k // 2
        padded = F.pad(x, (0, 0, 0, 0, half, half))  # zero frames before and after
        taps = torch.cat([padded[:, j:j + frames] for j in range(k)], dim=-1)  # channel j*Cin + c: frame t+j-k//2
        return F.linear(taps, self.weight[..., 0, 0].transpose(1, 2).reshape(cout, k * cin), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({self.kernel_size}, 1, 1), "
                f"padding=({self.kernel_size // 2}, 0, 0), bias={self.bias is not None}")


class Mlp(nn.Module):
    """``c_fc`` -> activation -> ``c_proj`` (CLIP's MLP names)."""

    def __init__(self, *, c_fc: nn.Linear, act: nn.Module, c_proj: nn.Linear) -> None:
        super().__init__()
        self.c_fc = c_fc
        self.gelu = act
        self.c_proj = c_proj

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


def _tokens_to_frames(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """(N, h*w, C) channels-last tokens -> (N, C, h, w) channels-last frames (a view, no copy)."""
    n, _, c = x.shape
    return x.view(n, grid[0], grid[1], c).permute(0, 3, 1, 2)


def _frames_to_tokens(x: Tensor) -> Tensor:
    """(N, C, h, w) frames -> (N, h*w, C) tokens (a view when the frames are channels-last)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n, h * w, c)


class TAdaBlock(nn.Module):
    """The TAda branch on patch tokens: per-token ``tada_pre_proj``, ``tadaconv``, act, ``tada_proj``."""

    def __init__(self, *, tada_pre_proj: nn.Module, tadaconv: nn.Module, act: nn.Module, tada_proj: nn.Module) -> None:
        super().__init__()
        self.tada_pre_proj = tada_pre_proj
        self.tadaconv = tadaconv
        self.act = act
        self.tada_proj = tada_proj

    def forward(self, patches: Tensor, num_frames: int, grid: tuple[int, int]) -> Tensor:
        """patches (B*T, h*w, W) -> the branch's output, same shape."""
        y = self.tada_pre_proj(patches)
        y = _frames_to_tokens(self.tadaconv.forward_frames(_tokens_to_frames(y, grid), num_frames))
        return self.tada_proj(self.act(y))

    def zero_output(self) -> None:
        """Zero ``tada_proj``: the branch adds nothing at init, whatever the calibration."""
        nn.init.zeros_(self.tada_proj.weight)
        if self.tada_proj.bias is not None:
            nn.init.zeros_(self.tada_proj.bias)


class TAdaBlockTempEnhanced(TAdaBlock):
    """The "temporally enhanced" branch: ``tada_pre_proj`` is a 3x1x1 temporal conv, ``tada_proj`` a 1x1x1 conv.

    Both are :class:`TokenTemporalConv` (official Conv3d shapes) acting on (B, T, h*w, C) tokens.
    """

    def forward(self, patches: Tensor, num_frames: int, grid: tuple[int, int]) -> Tensor:
        n, s, c = patches.shape
        y = self.tada_pre_proj(patches.unflatten(0, (n // num_frames, num_frames)))
        y = _frames_to_tokens(self.tadaconv.forward_frames(_tokens_to_frames(y.view(n, s, -1), grid), num_frames))
        y = self.act(y)
        return self.tada_proj(y.view(n // num_frames, num_frames, s, -1)).view(n, s, -1)


class TAdaFormerBlock(nn.Module):
    """One residual block of TAdaFormer (module ``backbone.layers.{i}``); see the module docstring.

    ``attn`` is an nn.MultiheadAttention built batch-first; ``tada2`` is the optional second TAda
    branch (between attention and MLP). Every sub-layer's increment goes through ``drop_path``.
    """

    def __init__(self, *, attn: nn.MultiheadAttention, ln_1: nn.Module, mlp: nn.Module, ln_2: nn.Module,
                 tada: TAdaBlock | None, tada2: TAdaBlock | None = None, drop_path: float = 0.0) -> None:
        super().__init__()
        if not attn.batch_first:
            raise ValueError("TAdaFormerBlock needs a batch-first nn.MultiheadAttention (tokens are (B*T, L, W))")
        if tada2 is not None and tada is None:
            raise ValueError("a second TAda branch (tada2) needs the first (tada)")
        self.attn = attn
        self.ln_1 = ln_1
        self.mlp = mlp
        self.ln_2 = ln_2
        self.tada = tada
        self.tada2 = tada2
        self.drop_path = VideoDropPath(drop_path)

    def init_weights(self) -> None:
        """The official block init: trunc-normal(0.02) weights and zero biases for every Linear and
        Conv3d-shaped layer (attention output and routing convs included; the stacked attention
        in-projection is no Linear and keeps its init), except layers flagged ``skip_init``; then
        the TAda branches' ``tada_proj`` is zeroed so that the block starts as the image block."""
        for m in self.modules():
            if getattr(m, "skip_init", False):
                continue
            if isinstance(m, (nn.Linear, nn.Conv3d, TokenTemporalConv, TemporalConvWeight)):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for branch in (self.tada, self.tada2):
            if branch is not None:
                branch.zero_output()

    def _tada(self, branch: TAdaBlock, x: Tensor, num_frames: int, grid: tuple[int, int]) -> Tensor:
        update = self.drop_path(branch(x[:, 1:], num_frames, grid), num_frames)
        return torch.cat([x[:, :1], x[:, 1:] + update], dim=1)

    def forward(self, x: Tensor, num_frames: int, grid: tuple[int, int]) -> Tensor:
        """x (B*T, 1 + h*w, W) -> same shape."""
        if self.tada is not None:
            x = self._tada(self.tada, x, num_frames, grid)
        h = self.ln_1(x)
        # nn.MultiheadAttention's fused inference kernel has no TorchScript-ONNX translation: while TorchScript
        # traces, key and value are a view of h (not h itself), which keeps the layer on its plain path.
        kv = h.view_as(h) if torch.jit.is_tracing() else h
        x = x + self.drop_path(self.attn(h, kv, kv, need_weights=False)[0], num_frames)
        if self.tada2 is not None:
            x = self._tada(self.tada2, x, num_frames, grid)
        return x + self.drop_path(self.mlp(self.ln_2(x)), num_frames)


class VisionTransformerBackbone(nn.Module):
    """CLIP's image tower over tubelets: ``conv1``, class and positional embeddings, ``ln_pre``,
    ``layers``, and ``ln_post`` (+ ``proj`` when built with an output projection).

    ``conv1`` is a Conv3d (kernel (k, p, p), stride (s, p, p), temporal padding k//2, no bias), so
    T frames become T' = (T + 2(k//2) - k)//s + 1 token frames. The positional embedding is shared
    by all frames (there is no temporal embedding) and fixes the input resolution.
    """

    def __init__(self, *, conv1: nn.Conv3d, layers: Sequence[TAdaFormerBlock], input_res: int,
                 output_dim: int | None = None) -> None:
        super().__init__()
        width = conv1.out_channels
        patch = conv1.kernel_size[1]
        if input_res % patch:
            raise ValueError(f"input resolution {input_res} is not a multiple of the patch size {patch}")
        self.grid = (input_res // patch, input_res // patch)
        self.input_res = input_res
        self.width = width
        scale = width ** -0.5
        self.conv1 = conv1
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid[0] * self.grid[1] + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.layers = nn.ModuleList(layers)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim)) if output_dim else None
        self.num_features = output_dim or width

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T, H, W) clip -> tokens (B, T', 1 + h*w, W) after the last block."""
        if tuple(x.shape[-2:]) != (self.input_res, self.input_res):
            raise ValueError(
                f"input frames must be {self.input_res}x{self.input_res} (the positional embedding's grid), "
                f"got {tuple(x.shape[-2:])}"
            )
        x = self.conv1(x)  # (B, W, T', h, w)
        b, w, t = x.shape[:3]
        x = x.permute(0, 2, 3, 4, 1).reshape(b * t, -1, w)
        cls = self.class_embedding.to(x.dtype).expand(b * t, 1, w)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        for layer in self.layers:
            x = layer(x, t, self.grid)
        return x.view(b, t, x.shape[1], w)

    def pool(self, tokens: Tensor) -> Tensor:
        """(B, T', L, W) tokens -> (B, num_features): class tokens averaged over time, ``ln_post``, ``proj``."""
        x = self.ln_post(tokens[:, :, 0].mean(dim=1))
        return x if self.proj is None else x @ self.proj


class TAdaFormer(nn.Module):
    """A video classifier: ``backbone`` (:class:`VisionTransformerBackbone`) and ``head``; returns logits.

    Input is (B, 3, T, H, W) or ``{"video": tensor}``. ``forward_features`` gives the tokens of the
    last block (B, T', 1 + h*w, W); ``forward_head`` pools them (class tokens over time, ``ln_post``)
    and classifies.
    """

    def __init__(
        self, backbone: VisionTransformerBackbone, head: VideoHead, *, arch: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = backbone.num_features
        self.arch = dict(arch or {})
        self._channels_last = True

    @property
    def channels_last(self) -> bool:
        """Tokens are always channels-last; the flag exists for the shared benchmark/engine interface."""
        return self._channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        self._channels_last = bool(value)

    def forward_features(self, x: Tensor | dict) -> Tensor:
        """(B, C, T, H, W) clip (or ``{"video": clip}``) -> tokens of the last block (B, T', 1 + h*w, W)."""
        return self.backbone(VideoResNet._video(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, T', L, W) tokens -> logits (B, num_classes), or pooled features with pre_logits."""
        return self.head(self.backbone.pool(x), pre_logits=pre_logits)

    def forward(self, x: Tensor | dict) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.out

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (PyTorch's default Linear init); 0 removes it (features out)."""
        like = self.backbone.class_embedding
        self.head.out = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                         if num_classes > 0 else nn.Identity())
        self.arch["num_classes"] = num_classes

    @property
    def num_classes(self) -> int:
        return self.head.out.out_features if isinstance(self.head.out, nn.Linear) else 0


# ------------------------------------------------------------------------------------------------
# Builder
# ------------------------------------------------------------------------------------------------
def _tada_branch(width: int, *, reduction: int, temp_enhance: bool, route_ratio: int,
                 route_kernels: Sequence[int], num_frames: int) -> TAdaBlock:
    """One TAda branch with the official layers: d_m = width // reduction channels in the TAdaConv."""
    if width % reduction:
        raise ValueError(f"width {width} is not divisible by the TAda reduction {reduction}")
    d_m = width // reduction
    c_route = d_m // route_ratio
    if d_m % route_ratio or c_route < ROUTE_HEAD_DIM or c_route % ROUTE_HEAD_DIM:
        raise ValueError(
            f"the TAda routing width (width {width} / reduction {reduction} / ROUTE_FUNC_R {route_ratio} = "
            f"{d_m / route_ratio:g}) must be a positive multiple of its attention head size {ROUTE_HEAD_DIM}"
        )
    tadaconv = TAdaConv2dV2(
        d_m, d_m, kernel_size=(1, 3, 3), padding=(0, 1, 1), groups=d_m, bias=True, cal_dim="cout",
        num_frames=num_frames, rf_r=route_ratio, rf_k=list(route_kernels), head_dim=ROUTE_HEAD_DIM,
        internal_rf_func=True, internal_temp_aggr=True,
    )
    if temp_enhance:
        return TAdaBlockTempEnhanced(tada_pre_proj=TokenTemporalConv(width, d_m, 3), tadaconv=tadaconv,
                                     act=QuickGELU(), tada_proj=TokenTemporalConv(d_m, width, 1))
    return TAdaBlock(tada_pre_proj=nn.Linear(width, d_m), tadaconv=tadaconv, act=QuickGELU(),
                     tada_proj=nn.Linear(d_m, width))


def tadaformer(
    *,
    width: int = 768,
    depth: int = 12,
    heads: int = 12,
    patch_size: int = 16,
    input_res: int = 224,
    tubelet_size: int = 3,
    tubelet_stride: int = 2,
    in_channels: int = 3,
    num_classes: int = 400,
    num_frames: int = 16,
    tada: bool = True,
    temp_enhance: bool = False,
    double_tada: bool = False,
    reduction: int = 2,
    route_ratio: int = 2,
    route_kernels: Sequence[int] = (3, 3),
    drop_path: float = 0.0,
    attn_dropout: float = 0.0,
    dropout: float = 0.5,
    output_dim: int | None = None,
) -> TAdaFormer:
    """Build a TAdaFormer (or, with ``tada=False``, the plain CLIP ViT over the same tubelets).

    ``num_frames``: input frames per clip, given to the TAdaConvs (T' = token frames after
    ``conv1``). ``temp_enhance``/``double_tada``: the SSv2 variants' temporal-conv projections and
    second TAda branch. ``output_dim``: CLIP's output projection (``proj``; official REQUIRE_PROJ).
    Drop-path rate of block i is ``drop_path * i / (depth - 1)``.
    """
    if width % heads:
        raise ValueError(f"width {width} is not divisible by the number of heads {heads}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if double_tada and not tada:
        raise ValueError("double_tada needs tada=True")
    token_frames = (num_frames + 2 * (tubelet_size // 2) - tubelet_size) // tubelet_stride + 1
    conv1 = nn.Conv3d(in_channels, width, (tubelet_size, patch_size, patch_size),
                      stride=(tubelet_stride, patch_size, patch_size), padding=(tubelet_size // 2, 0, 0), bias=False)
    rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    branch = dict(reduction=reduction, temp_enhance=temp_enhance, route_ratio=route_ratio,
                  route_kernels=tuple(route_kernels), num_frames=token_frames)
    layers = []
    for i in range(depth):
        block = TAdaFormerBlock(
            attn=nn.MultiheadAttention(width, heads, dropout=attn_dropout, batch_first=True),
            ln_1=nn.LayerNorm(width),
            mlp=Mlp(c_fc=nn.Linear(width, 4 * width), act=QuickGELU(), c_proj=nn.Linear(4 * width, width)),
            ln_2=nn.LayerNorm(width),
            tada=_tada_branch(width, **branch) if tada else None,
            tada2=_tada_branch(width, **branch) if double_tada else None,
            drop_path=rates[i],
        )
        block.init_weights()
        layers.append(block)
    backbone = VisionTransformerBackbone(conv1=conv1, layers=layers, input_res=input_res, output_dim=output_dim)
    head = VideoHead(backbone.num_features, num_classes, dropout=dropout)
    arch = dict(family="tadaformer", width=width, depth=depth, heads=heads, patch_size=patch_size,
                input_res=input_res, num_frames=num_frames, tada=tada, temp_enhance=temp_enhance,
                double_tada=double_tada, num_classes=num_classes)
    return TAdaFormer(backbone, head, arch=arch)
