"""TAdaConvNeXtV2: a ConvNeXt over frames whose depthwise convs are TAdaConvV2s, and its plain twin.

Module names and parameter shapes are the official ones, so ``state_dict()`` of
``tadaconvnextv2_tiny(num_classes=400)`` has the 434 keys (45,971,488 parameters) of the official
checkpoint. Data flow of the backbone, input (B, 3, T, H, W)::

    downsample_layers.0: Conv3d (3, 4, 4) stride (2, 4, 4) pad (1, 0, 0) + LayerNorm   -> T' = ceil(T/2)
    stages.0 (depth[0] blocks) ; downsample_layers.i: LayerNorm + Conv (1, 2, 2) stride (1, 2, 2) ;
    stages.i ... ; mean over (T', h, w) ; norm (LayerNorm) ; head (dropout, Linear)

One ``TAdaConvNeXtV2Block``, x (B, d, T', h, w)::

    x ─┬─ dwconv_rf ── (alpha_w, alpha_b) ──┐
       └─ dwconv: TAdaConvV2 7x7 depthwise ─┴─ y ─┬─ norm ─────────────────────┐
                                                  └─ avgpool3 (time) ─ norm_avgpool ─ (+) ─ pwconv1 ─ QuickGELU
                                                                   ─ pwconv2 ─ gamma ─ drop_path ─ (+ x) ─ out

All LayerNorms have eps 1e-6; ``norm_avgpool`` starts at zero and ``dwconv_rf`` at alpha = 1, so
at initialisation a block is a per-frame ConvNeXt block (with QuickGELU). There is no GRN and no
BatchNorm. The compute runs on channels-last frames (B*T', h, w, d): the LayerNorms and Linears
act on the last dim, the depthwise conv sees a channels-last view, and the temporal pool is a
shifted add over the frame axis. The plain twin (``ConvNeXtBlock``, registered as
``convnext_*_frames``) is the same network without calibration and without the temporal branch: the
speed reference over the same frames, and the network an ImageNet ConvNeXt becomes per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tada.models.convert import convnext_2d_filter
from tada.models.layers import FrameConv
from tada.models.registry import register_model
from tada.models.resnet import VideoHead, VideoResNet
from tada.ops.primitives import quick_gelu, temporal_avg_pool3
from tada.ops.routing import TemporalConvWeight
from tada.ops.routing_v2 import RouteFuncAttention
from tada.ops.tadaconv_v2 import TAdaConv2dV2

__all__ = [
    "CONVNEXT_SIZES",
    "ConvNeXtBackbone",
    "ConvNeXtBlock",
    "TAdaConvNeXtV2Block",
    "VideoConvNeXt",
    "video_convnext",
]

# name -> (depths, widths, routing head_dim, drop-path rate of the model yaml)
CONVNEXT_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...], int, float]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768), 48, 0.2),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768), 48, 0.4),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024), 64, 0.6),
}


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def init_official(modules: Iterable[nn.Module]) -> None:
    """The official V2 init of ``modules``: trunc-normal(0.02) weights and zero biases for convs and Linears,
    LayerNorm 1 / 0, skipping layers their owner flags ``skip_init`` (the routing function's zero-initialised
    calibration layers)."""
    for module in modules:
        if getattr(module, "skip_init", False):
            continue
        if isinstance(module, (nn.Conv3d, nn.Linear, FrameConv, TemporalConvWeight, TAdaConv2dV2)):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def drop_path_frames(x: Tensor, rate: float, num_frames: int, training: bool) -> Tensor:
    """Stochastic depth per video: one Bernoulli(1 - rate) per clip, shared by its frames, scaled by 1/keep."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    clips = x.shape[0] // num_frames
    mask = x.new_empty(clips, 1).bernoulli_(keep).div_(keep)
    return x * mask.expand(clips, num_frames).reshape(-1, *([1] * (x.dim() - 1)))


class TAdaConvNeXtV2Block(nn.Module):
    """The official ``TAdaConvNeXtV2Block`` over channels-last frames x (B*T, h, w, d).

    Layers come in as arguments: ``dwconv`` (a depthwise :class:`TAdaConv2dV2`, cal "cout", with
    bias), ``dwconv_rf`` (its :class:`RouteFuncAttention`, alpha = 1 at start), the four
    channels-last ``norm``/``norm_avgpool``/``pwconv1``/``pwconv2`` and the layer-scale start.
    """

    def __init__(
        self,
        *,
        dwconv: TAdaConv2dV2,
        dwconv_rf: RouteFuncAttention,
        norm: nn.Module,
        norm_avgpool: nn.Module,
        pwconv1: nn.Linear,
        pwconv2: nn.Linear,
        layer_scale: float,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        dim = dwconv.out_channels
        self.dwconv = dwconv
        self.dwconv_rf = dwconv_rf
        self.norm = norm
        self.norm_avgpool = norm_avgpool
        self.pwconv1 = pwconv1
        self.pwconv2 = pwconv2
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))
        self.drop_path = float(drop_path)
        self.layer_scale = float(layer_scale)

    def reset_parameters(self) -> None:
        """The block's starts: calibration 1 (``dwconv_rf.zero_init_calibration``), ``norm_avgpool`` at zero
        (the temporal branch adds 0) and ``gamma`` at the layer-scale value."""
        self.dwconv_rf.zero_init_calibration()
        nn.init.zeros_(self.norm_avgpool.weight)
        nn.init.zeros_(self.norm_avgpool.bias)
        nn.init.constant_(self.gamma, self.layer_scale)

    def init_weights(self) -> None:
        """The official init: :func:`init_official` over the block's layers, then :meth:`reset_parameters`."""
        init_official(self.modules())
        self.reset_parameters()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        n, h, w, c = x.shape
        u = x.mean(dim=(1, 2), dtype=self.dwconv_rf.a.weight.dtype).view(n // num_frames, num_frames, c)
        alpha_w, alpha_b = self.dwconv_rf.forward_pooled(u)
        alphas = (alpha_w.reshape(n, c, 1, 1), alpha_b.reshape(n, c, 1, 1))
        y = self.dwconv.forward_frames(x.permute(0, 3, 1, 2), num_frames, alphas).permute(0, 2, 3, 1)
        pooled = temporal_avg_pool3(y.reshape(n // num_frames, num_frames, h, w, c), dim=1).view(n, h, w, c)
        z = self.norm(y).add_(self.norm_avgpool(pooled))  # LayerNorm's backward does not read its output
        z = self.pwconv2(quick_gelu(self.pwconv1(z))) * self.gamma
        return x + drop_path_frames(z, self.drop_path, num_frames, self.training)


class ConvNeXtBlock(nn.Module):
    """A per-frame ConvNeXt-V1 block (QuickGELU) on channels-last frames: the plain twin of the TAda block."""

    def __init__(
        self,
        *,
        dwconv: FrameConv,
        norm: nn.Module,
        pwconv1: nn.Linear,
        pwconv2: nn.Linear,
        layer_scale: float,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.dwconv = dwconv
        self.norm = norm
        self.pwconv1 = pwconv1
        self.pwconv2 = pwconv2
        self.gamma = nn.Parameter(torch.full((dwconv.out_channels,), float(layer_scale)))
        self.drop_path = float(drop_path)
        self.layer_scale = float(layer_scale)

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.layer_scale)

    def init_weights(self) -> None:
        """The official init: :func:`init_official` over the block's layers, then :meth:`reset_parameters`."""
        init_official(self.modules())
        self.reset_parameters()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        y = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        z = self.pwconv2(quick_gelu(self.pwconv1(self.norm(y)))) * self.gamma
        return x + drop_path_frames(z, self.drop_path, num_frames, self.training)


def tada_convnext_block(dim: int, *, route_ratio: int, route_kernels: Sequence[int], head_dim: int,
                        layer_scale: float, drop_path: float) -> TAdaConvNeXtV2Block:
    """The official block's layers for width ``dim``."""
    return TAdaConvNeXtV2Block(
        dwconv=TAdaConv2dV2(dim, dim, (1, 7, 7), padding=(0, 3, 3), groups=dim, bias=True, cal_dim="cout",
                            internal_rf_func=False, internal_temp_aggr=False),
        dwconv_rf=RouteFuncAttention(dim, ratio=route_ratio, kernels=tuple(route_kernels), with_bias_cal=True,
                                     zero_init_cal=True, head_dim=head_dim),
        norm=_layer_norm(dim),
        norm_avgpool=_layer_norm(dim),
        pwconv1=nn.Linear(dim, 4 * dim),
        pwconv2=nn.Linear(4 * dim, dim),
        layer_scale=layer_scale,
        drop_path=drop_path,
    )


def plain_convnext_block(dim: int, *, layer_scale: float, drop_path: float, **_: Any) -> ConvNeXtBlock:
    """A plain block's layers for width ``dim`` (routing settings do not apply)."""
    return ConvNeXtBlock(
        dwconv=FrameConv(dim, dim, 7, padding=3, groups=dim, bias=True),
        norm=_layer_norm(dim),
        pwconv1=nn.Linear(dim, 4 * dim),
        pwconv2=nn.Linear(4 * dim, dim),
        layer_scale=layer_scale,
        drop_path=drop_path,
    )


class Stem(nn.Sequential):
    """``downsample_layers.0``: Conv3d (kt, 4, 4) stride (st, 4, 4), then LayerNorm; returns channels-last frames."""

    def __init__(self, in_channels: int, dim: int, *, t_kernel: int, t_stride: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, dim, (t_kernel, 4, 4), stride=(t_stride, 4, 4), padding=((t_kernel - 1) // 2, 0, 0)),
            _layer_norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        y = self[0](x)  # (B, d, T', h, w)
        b, c, t, h, w = y.shape
        return self[1](y.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c))


class Downsample(nn.Sequential):
    """``downsample_layers.i``: LayerNorm, then a (1, 2, 2) stride-2 conv, on channels-last frames."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(_layer_norm(in_dim), FrameConv(in_dim, out_dim, 2, stride=2, padding=0, bias=True))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self[1](self[0](x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvNeXtBackbone(nn.Module):
    """``downsample_layers``, ``stages`` and the final ``norm`` (applied after pooling, in the head); built
    with the official init (:meth:`init_weights`)."""

    def __init__(
        self, downsample_layers: Sequence[nn.Module], stages: Sequence[Sequence[nn.Module]], norm: nn.Module
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList(downsample_layers)
        self.stages = nn.ModuleList(nn.ModuleList(blocks) for blocks in stages)
        self.norm = norm
        self.init_weights()

    def init_weights(self) -> None:
        """The stem and downsample layers, each block's own ``init_weights()``, the final norm, in module order."""
        init_official(self.downsample_layers.modules())
        for stage in self.stages:
            for block in stage:
                block.init_weights()
        init_official(self.norm.modules())

    def forward_frames(self, x: Tensor) -> tuple[Tensor, int]:
        """(B, 3, T, H, W) -> channels-last frame features (B*T', h, w, d3) and T'."""
        batch = x.shape[0]
        x = self.downsample_layers[0](x)
        num_frames = x.shape[0] // batch
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsample_layers[i](x)
            for block in stage:
                x = block(x, num_frames)
        return x, num_frames


class VideoConvNeXt(nn.Module):
    """A video classifier: ``backbone`` (ConvNeXt over frames) and ``head``; returns logits always.

    Input is (B, 3, T, H, W) or ``{"video": tensor}``. ``forward_features`` gives (B, d3, T', h, w);
    ``forward_head`` pools over (T', h, w), applies ``backbone.norm`` and the head.
    """

    # ImageNet ConvNeXt-V1 init (``tada.checkpoint.load_in1k``): the converter, and the keys no image model has.
    image_weights_filter = staticmethod(convnext_2d_filter)
    image_init_new_keys = (".dwconv_rf.", ".norm_avgpool.", "head.")

    def __init__(self, backbone: ConvNeXtBackbone, head: VideoHead, *, arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_features = head.in_features
        self.arch = dict(arch or {})

    _video = staticmethod(VideoResNet._video)

    def forward_features(self, x: Tensor | dict) -> Tensor:
        feats, num_frames = self.backbone.forward_frames(self._video(x))
        n, h, w, c = feats.shape
        return feats.reshape(n // num_frames, num_frames, h, w, c).permute(0, 4, 1, 2, 3)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, d3, T', h, w) -> logits (B, K), or the normalised pooled features (B, d3) with pre_logits."""
        return self.head(self.backbone.norm(x.mean(dim=(2, 3, 4))), pre_logits=pre_logits)

    def forward(self, x: Tensor | dict) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.out

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (PyTorch's default Linear init); 0 removes it (features out)."""
        like = self.backbone.norm.weight
        self.head.out = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                         if num_classes > 0 else nn.Identity())
        self.arch["num_classes"] = num_classes

    @property
    def num_classes(self) -> int:
        return self.head.out.out_features if isinstance(self.head.out, nn.Linear) else 0


def video_convnext(
    *,
    block: Callable[..., nn.Module] = tada_convnext_block,
    depths: Sequence[int] = (3, 3, 9, 3),
    widths: Sequence[int] = (96, 192, 384, 768),
    in_channels: int = 3,
    num_classes: int = 400,
    stem_t_kernel: int = 3,
    stem_t_stride: int = 2,
    route_ratio: int = 2,
    route_kernels: Sequence[int] = (3, 3),
    head_dim: int = 48,
    layer_scale: float = 1e-6,
    drop_path: float = 0.0,
    dropout: float = 0.5,
) -> VideoConvNeXt:
    """Build a TAdaConvNeXtV2 (``block=tada_convnext_block``) or its plain twin (``plain_convnext_block``).

    ``block``: a factory called as ``block(dim, route_ratio=, route_kernels=, head_dim=,
    layer_scale=, drop_path=)`` that returns a block with ``init_weights()``.
    ``depths``/``widths``: blocks and channels of the four stages. Block n of N (0-based, all
    stages) gets drop-path rate ``drop_path * n / (N - 1)``. The routing width of a stage is
    ``width // route_ratio`` and must be a positive multiple of ``head_dim``.
    """
    if not callable(block):
        raise TypeError(f"block must be a block factory (tada_convnext_block, plain_convnext_block), got {block!r}")
    depths = tuple(int(d) for d in depths)
    widths = tuple(int(w) for w in widths)
    if len(depths) != 4 or min(depths) < 1 or len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"depths and widths need four positive entries each, got {depths} and {widths}")
    if stem_t_kernel < 1 or stem_t_kernel % 2 != 1 or stem_t_stride < 1:
        raise ValueError(f"stem temporal kernel must be odd and stride >= 1, got {stem_t_kernel}, {stem_t_stride}")
    total = sum(depths)
    rates = [drop_path * n / (total - 1) if total > 1 else 0.0 for n in range(total)]
    downsample = [Stem(in_channels, widths[0], t_kernel=stem_t_kernel, t_stride=stem_t_stride)]
    downsample += [Downsample(widths[i - 1], widths[i]) for i in range(1, 4)]
    stages, n = [], 0
    for depth, dim in zip(depths, widths, strict=True):
        stages.append([
            block(dim, route_ratio=route_ratio, route_kernels=route_kernels, head_dim=head_dim,
                       layer_scale=layer_scale, drop_path=rates[n + j])
            for j in range(depth)
        ])
        n += depth
    backbone = ConvNeXtBackbone(downsample, stages, _layer_norm(widths[-1]))
    head = VideoHead(widths[-1], num_classes, dropout=dropout)
    arch = dict(family="convnext", block=getattr(block, "__name__", type(block).__name__), depths=depths,
                widths=widths, num_classes=num_classes)
    return VideoConvNeXt(backbone, head, arch=arch)


# Registered entry points. Keywords override the size's defaults (e.g. ``depths=(1, 1, 2, 1),
# widths=(16, 32, 64, 128), head_dim=8`` for a small model); ``drop_path`` defaults to 0.
def _sized(size: str, block: Callable[..., nn.Module], kwargs: dict[str, Any]) -> VideoConvNeXt:
    depths, widths, head_dim, _ = CONVNEXT_SIZES[size]
    kwargs = {"depths": depths, "widths": widths, "head_dim": head_dim, **kwargs}
    return video_convnext(block=block, **kwargs)


@register_model
def tadaconvnextv2_tiny(**kwargs: Any) -> VideoConvNeXt:
    """TAdaConvNeXtV2-T: depths (3, 3, 9, 3), widths (96, 192, 384, 768); 45,971,488 parameters with 400 classes."""
    return _sized("tiny", tada_convnext_block, kwargs)


@register_model
def tadaconvnextv2_small(**kwargs: Any) -> VideoConvNeXt:
    """TAdaConvNeXtV2-S: depths (3, 3, 27, 3), widths (96, 192, 384, 768); 82,249,120 parameters with 400 classes."""
    return _sized("small", tada_convnext_block, kwargs)


@register_model
def tadaconvnextv2_base(**kwargs: Any) -> VideoConvNeXt:
    """TAdaConvNeXtV2-B: depths (3, 3, 27, 3), widths (128, 256, 512, 1024), routing heads of 64;
    145,687,632 parameters."""
    return _sized("base", tada_convnext_block, kwargs)


@register_model
def convnext_tiny_frames(**kwargs: Any) -> VideoConvNeXt:
    """The plain twin of TAdaConvNeXtV2-T: per-frame ConvNeXt-T blocks after the same 3-D stem."""
    return _sized("tiny", plain_convnext_block, kwargs)


@register_model
def convnext_small_frames(**kwargs: Any) -> VideoConvNeXt:
    """The plain twin of TAdaConvNeXtV2-S."""
    return _sized("small", plain_convnext_block, kwargs)


@register_model
def convnext_base_frames(**kwargs: Any) -> VideoConvNeXt:
    """The plain twin of TAdaConvNeXtV2-B."""
    return _sized("base", plain_convnext_block, kwargs)
