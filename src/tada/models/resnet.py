"""The ResNet3D family over frames: TAda2D (TAdaConv bottlenecks) and TSN (plain 2-D bottlenecks).

Module names and parameter shapes follow the official TAda2D exactly, so
``state_dict()`` of ``video_resnet(block=TAda2DBlock, depth=50, num_classes=400)`` has the 560 keys
of the official checkpoint. Compute is 2-D over frames (B*T, C, H, W) end to end; only the
routing function and the temporal pool look at T.

Data flow of one TAda2D bottleneck (``TAda2DBlock``)::

    x ─ a 1x1 ─ a_bn ─ relu ─ y ─┬──────────────── b 3x3 TAdaConv (stride s) ─ z
                                 └─ b_rf (alpha) ──┘                           │
              z ─┬─ b_bn ─────────────────────────┐                           │
                 └─ b_avgpool (3,1,1) ─ b_avgpool_bn ─ (+) ─ relu ─ c 1x1 ─ c_bn ─ out

and the residual block adds ``short_cut`` (projection in ``res_1``) then applies ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tada.models.layers import (
    FrameConv,
    TemporalAvgPool,
    frames_to_video,
    video_to_frames,
)
from tada.ops.routing import RouteFuncMLP
from tada.ops.tadaconv import TAdaConv2d

__all__ = [
    "DEPTH_LAYERS",
    "TADA_INITS",
    "Base2DBlock",
    "ResBlock",
    "ResNetBackbone",
    "Stem",
    "TAda2DBlock",
    "VideoHead",
    "VideoResNet",
    "set_kernel_layout",
    "video_resnet",
]

DEPTH_LAYERS: dict[int, tuple[int, int, int, int]] = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


TADA_INITS = ("official", "kaiming")


def _bn(channels: int, eps: float, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


def _kaiming_conv(conv: FrameConv) -> None:
    """The official conv init: Kaiming-normal, fan_out, relu gain; zero bias."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _reset_bn(bn: nn.modules.batchnorm._BatchNorm) -> None:
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


class Stem(nn.Module):
    """``Base2DStem``: conv (1, k, k) stride (1, s, s), BN, ReLU. No max-pool, as in the official stem."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int, bn_eps: float,
                 bn_momentum: float) -> None:
        super().__init__()
        self.a = FrameConv(in_channels, out_channels, kernel_size, stride=stride)
        self.a_bn = _bn(out_channels, bn_eps, bn_momentum)
        self.a_relu = nn.ReLU(inplace=True)

    def init_weights(self) -> None:
        """The official init: Kaiming-normal (fan_out, relu) conv, BN gamma 1 / beta 0."""
        _kaiming_conv(self.a)
        _reset_bn(self.a_bn)

    def forward(self, x: Tensor) -> Tensor:
        return self.a_relu(self.a_bn(self.a(x)))


class TAda2DBlock(nn.Module):
    """The TAda2D bottleneck branch (official ``TAda2DBlock``), on frames.

    ``tada_init`` chooses the init of the TAdaConv weight in :meth:`init_weights`: "official"
    (Kaiming-uniform a=sqrt(5) on the 6-D tensor, the official construction init, which the
    official network init leaves alone; about 1/sqrt(3*Cout) of a Kaiming-normal weight's norm)
    or "kaiming" (the Kaiming-normal init of every other conv). Behind a BN this only changes the
    step size: the TAdaConv weights turn much faster early in training, and from scratch at lr 0.1
    TAda2D learns temporal order sooner and better with "official" (docs/design.md, "Training
    from scratch").
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        *,
        stride: int,
        kernel_size: int = 3,
        route_ratio: int = 4,
        route_kernels: Sequence[int] = (3, 3),
        pool_kernel: int = 3,
        tada_init: str = "official",
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if tada_init not in TADA_INITS:
            raise ValueError(f"tada_init must be one of {TADA_INITS}, got {tada_init!r}")
        self.tada_init = tada_init
        self.a = FrameConv(in_channels, width, 1)
        self.a_bn = _bn(width, bn_eps, bn_momentum)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = TAdaConv2d(width, width, kernel_size, stride=stride, padding=kernel_size // 2, cal_dim="cin")
        self.b_rf = RouteFuncMLP(width, ratio=route_ratio, kernels=tuple(route_kernels),
                                 bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.b_bn = _bn(width, bn_eps, bn_momentum)
        self.b_avgpool = TemporalAvgPool(pool_kernel)
        self.b_avgpool_bn = _bn(width, bn_eps, bn_momentum)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = FrameConv(width, out_channels, 1)
        self.c_bn = _bn(out_channels, bn_eps, bn_momentum)
        self.zero_init_temporal()

    def zero_init_temporal(self) -> None:
        """Zero the pool branch's BN (the routing function's last layer is zero already): alpha == 1 and the
        pool branch adds 0, so the block computes a plain 2-D bottleneck."""
        nn.init.zeros_(self.b_avgpool_bn.weight)
        nn.init.zeros_(self.b_avgpool_bn.bias)

    def init_weights(self) -> None:
        """The official init: Kaiming-normal (fan_out, relu) convs, BN gamma 1 / beta 0, the TAdaConv
        weight as ``tada_init`` says, the routing function's own init (:meth:`RouteFuncMLP.init_weights`)
        and :meth:`zero_init_temporal`. Layers are visited in their registration order."""
        _kaiming_conv(self.a)
        _reset_bn(self.a_bn)
        if self.tada_init == "kaiming":
            nn.init.kaiming_normal_(self.b.weight_2d, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.kaiming_uniform_(self.b.weight, a=math.sqrt(5))
        if self.b.bias is not None:
            nn.init.zeros_(self.b.bias)
        self.b_rf.init_weights()
        _reset_bn(self.b_bn)
        self.zero_init_temporal()
        _kaiming_conv(self.c)
        _reset_bn(self.c_bn)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        y = self.a_relu(self.a_bn(self.a(x)))
        alpha = self.b_rf(y, num_frames)  # from the pre-stride input of b
        # Not scaled in place even at inference: y is a_relu's output, which forward hooks and
        # feature extractors may hold (in place, their value would depend on the grad mode).
        z = self.b(y, alpha)
        # The same four ops in train and eval: folding the eval BNs and the pool into one temporal
        # filter saved nothing measurable on CPU (1-thread eval, within run-to-run noise) and cost
        # about 20 tiny per-call ops (a GPU's eval forward is launch-bound).
        out = self.b_bn(z)
        z = out.add_(self.b_avgpool_bn(self.b_avgpool(z, num_frames)))  # BN backward needs no output
        return self.c_bn(self.c(self.b_relu(z)))


class Base2DBlock(nn.Module):
    """A plain 2-D bottleneck applied frame by frame (the TSN baseline), stride in the 3x3 conv."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        *,
        stride: int,
        kernel_size: int = 3,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.a = FrameConv(in_channels, width, 1)
        self.a_bn = _bn(width, bn_eps, bn_momentum)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = FrameConv(width, width, kernel_size, stride=stride)
        self.b_bn = _bn(width, bn_eps, bn_momentum)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = FrameConv(width, out_channels, 1)
        self.c_bn = _bn(out_channels, bn_eps, bn_momentum)

    def init_weights(self) -> None:
        """The official init: Kaiming-normal (fan_out, relu) convs, BN gamma 1 / beta 0 (no zero-init of ``c_bn``)."""
        for conv, bn in ((self.a, self.a_bn), (self.b, self.b_bn), (self.c, self.c_bn)):
            _kaiming_conv(conv)
            _reset_bn(bn)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        y = self.a_relu(self.a_bn(self.a(x)))
        z = self.b_relu(self.b_bn(self.b(y)))
        return self.c_bn(self.c(z))


class ResBlock(nn.Module):
    """``Base3DBlock``: ReLU(shortcut(x) + conv_branch(x)); a projection only where shape changes."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, branch: nn.Module,
                 bn_eps: float, bn_momentum: float) -> None:
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.short_cut = FrameConv(in_channels, out_channels, 1, stride=stride)
            self.short_cut_bn = _bn(out_channels, bn_eps, bn_momentum)
        else:
            self.short_cut = None
            self.short_cut_bn = None
        self.conv_branch = branch
        self.relu = nn.ReLU(inplace=True)

    def init_weights(self) -> None:
        """The official init of the projection (Kaiming-normal conv, BN 1 / 0), then the branch's own."""
        if self.short_cut is not None:
            _kaiming_conv(self.short_cut)
            _reset_bn(self.short_cut_bn)
        self.conv_branch.init_weights()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        out = self.conv_branch(x, num_frames)
        identity = x if self.short_cut is None else self.short_cut_bn(self.short_cut(x))
        return self.relu(out + identity)


class ResStage(nn.Module):
    """Blocks ``res_1`` .. ``res_n``; only ``res_1`` downsamples."""

    def __init__(self, blocks: Sequence[ResBlock]) -> None:
        super().__init__()
        for i, block in enumerate(blocks, start=1):
            self.add_module(f"res_{i}", block)

    def init_weights(self) -> None:
        for block in self.children():
            block.init_weights()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        for block in self.children():
            x = block(x, num_frames)
        return x


class ResNetBackbone(nn.Module):
    """Stem ``conv1`` and stages ``conv2`` .. ``conv5`` over frames; built with the official init
    (:meth:`init_weights`)."""

    def __init__(self, stem: Stem, stages: Sequence[ResStage]) -> None:
        super().__init__()
        self.conv1 = stem
        for i, stage in enumerate(stages, start=2):
            self.add_module(f"conv{i}", stage)
        self.num_stages = len(stages)
        self.init_weights()

    def init_weights(self) -> None:
        """Each part's own init, stem first, blocks in order (the official network init)."""
        self.conv1.init_weights()
        for i in range(2, 2 + self.num_stages):
            getattr(self, f"conv{i}").init_weights()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        x = self.conv1(x)
        for i in range(2, 2 + self.num_stages):
            x = getattr(self, f"conv{i}")(x, num_frames)
        return x


class VideoHead(nn.Module):
    """``BaseHead`` without the eval-only softmax: global average pool, dropout, linear -> logits."""

    def __init__(self, in_features: int, num_classes: int, *, dropout: float) -> None:
        super().__init__()
        self.in_features = in_features
        self.dropout_rate = dropout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, pooled: Tensor, pre_logits: bool = False) -> Tensor:
        """pooled (B, C) features -> logits (B, num_classes), or the features with pre_logits."""
        if pre_logits:
            return pooled
        return self.out(self.dropout(pooled))


def set_kernel_layout(module: nn.Module, *, channels_last: bool) -> None:
    """Store the 2-D kernels of every FrameConv / TAdaConv2d in ``module`` channels-last (or not).

    Shapes stay the official ones; only the strides of the 2-D views the convs use change.
    """
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, FrameConv):
                m.weight.data = m.weight.data.squeeze(2).contiguous(memory_format=fmt).unsqueeze(2)
            elif isinstance(m, TAdaConv2d):
                m.weight.data = m.weight.data[0, 0].contiguous(memory_format=fmt)[None, None]


class VideoResNet(nn.Module):
    """A video classifier: ``backbone`` (ResNet over frames) and ``head``; returns logits always.

    Input is (B, 3, T, H, W) or ``{"video": tensor}``. ``channels_last`` makes the frames
    channels-last at the stem (the fast layout for oneDNN and cuDNN); every later op keeps it.
    Do not call ``model.to(memory_format=...)``: the official 5-D parameter shapes must stay.
    """

    def __init__(self, backbone: ResNetBackbone, head: VideoHead, *, channels_last: bool = False,
                 arch: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self._channels_last = False
        self.channels_last = channels_last
        self.num_features = head.in_features
        self.arch = dict(arch or {})

    @property
    def channels_last(self) -> bool:
        return self._channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        """Channels-last frames from the stem on, and conv kernels stored channels-last.

        The kernels keep their official shapes ((Cout, Cin, 1, kh, kw), (1, 1, Cout, Cin, kh, kw));
        only their strides change, so that the 2-D views the convs use are channels-last and
        oneDNN / cuDNN never re-layout them per call (about 10% of a CPU train step). State dicts
        load and save the same. Set it before creating DDP wrappers.
        """
        self._channels_last = bool(value)
        set_kernel_layout(self.backbone, channels_last=self._channels_last)

    # --- timm-like contract ------------------------------------------------------------------
    @staticmethod
    def _video(x: Tensor | dict | list | tuple) -> Tensor:
        """The clip tensor of a bare tensor, ``{"video": tensor}``, or a list whose element 0 it is (official)."""
        if isinstance(x, dict):
            if "video" not in x:
                raise KeyError(f"model input dict needs a 'video' entry, got keys {sorted(x)}")
            x = x["video"]
        elif isinstance(x, (list, tuple)):
            if not x:
                raise ValueError("model input list is empty; expected [video (B, C, T, H, W), ...]")
            x = x[0]
        if not isinstance(x, Tensor):
            raise TypeError(f"model input must be a tensor (B, C, T, H, W), got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(f"model input must be (B, C, T, H, W), got shape {tuple(x.shape)}")
        return x

    def forward_frames(self, x: Tensor | dict) -> tuple[Tensor, int]:
        """Backbone features as frames (B*T, C, h, w) and T."""
        x = self._video(x)
        num_frames = x.shape[2]
        return self.backbone(video_to_frames(x, channels_last=self.channels_last), num_frames), num_frames

    def forward_features(self, x: Tensor | dict) -> Tensor:
        """Unpooled backbone features (B, C, T, h, w) (a view of the frame features)."""
        feats, num_frames = self.forward_frames(x)
        return frames_to_video(feats, num_frames)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, T, h, w) features -> logits (B, num_classes), or pooled (B, C) with pre_logits.

        Pooled as the official head pools: over (h, w) per frame, then over T.
        """
        return self.head(x.mean(dim=(3, 4)).mean(dim=2), pre_logits=pre_logits)

    def forward(self, x: Tensor | dict) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.out

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (PyTorch's default Linear init); 0 removes it (features out)."""
        like = self.backbone.conv1.a.weight  # the new head lives where the model does, in its dtype
        self.head.out = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                         if num_classes > 0 else nn.Identity())
        self.arch["num_classes"] = num_classes

    @property
    def num_classes(self) -> int:
        return self.head.out.out_features if isinstance(self.head.out, nn.Linear) else 0


# ------------------------------------------------------------------------------------------------
# Builder
# ------------------------------------------------------------------------------------------------
def _spatial_kernel(k: int | Sequence[int], what: str) -> int:
    """Accept k, (k, k) or the official (1, k, k); square kernels with temporal size 1 only."""
    if isinstance(k, int):
        return k
    k = tuple(int(v) for v in k)
    if len(k) == 3:
        if k[0] != 1:
            raise ValueError(f"{what}: temporal kernel {k[0]} is not supported (2-D branches); got {k}")
        k = k[1:]
    if len(k) != 2 or k[0] != k[1] or k[0] % 2 != 1:
        raise ValueError(f"{what}: kernel must be square and odd, got {k}")
    return k[0]


def video_resnet(
    *,
    block: Callable[..., nn.Module] = TAda2DBlock,
    block_args: Mapping[str, Any] | None = None,
    stem: Callable[..., nn.Module] = Stem,
    depth: int = 50,
    layers: Sequence[int] | None = None,
    widths: Sequence[int] = (64, 256, 512, 1024, 2048),
    expansion: int = 4,
    in_channels: int = 3,
    num_classes: int = 400,
    kernel_sizes: Sequence[int | Sequence[int]] = (7, 3, 3, 3, 3),
    downsampling: Sequence[bool] = (True, True, True, True, True),
    dropout: float = 0.5,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    channels_last: bool = False,
) -> VideoResNet:
    """Build a ResNet3D-family video classifier from its parts and plain arguments.

    ``block``: the residual branch, a class or factory called as ``block(in_channels, width,
    out_channels, stride=, kernel_size=, bn_eps=, bn_momentum=, **block_args)`` with an
    ``init_weights()`` method: :class:`TAda2DBlock` (TAda2D) or :class:`Base2DBlock` (TSN).
    ``stem``: called as ``stem(in_channels, out_channels, kernel_size=, stride=, bn_eps=,
    bn_momentum=)``. ``widths``: stem output then each stage's output channels (official
    NUM_FILTERS); bottleneck width = output / ``expansion``. ``layers`` overrides the block counts
    that ``depth`` implies. ``kernel_sizes``: stem then the 3x3 conv of each stage.
    ``downsampling``: stride 2 in the stem and in ``res_1`` of each stage.
    """
    if not callable(block) or not callable(stem):
        raise TypeError(f"block and stem must be classes or factories, got {block!r} and {stem!r}")
    if layers is None:
        if depth not in DEPTH_LAYERS:
            raise ValueError(f"depth must be one of {sorted(DEPTH_LAYERS)} (bottleneck ResNets), got {depth}")
        layers = DEPTH_LAYERS[depth]
    layers = tuple(int(n) for n in layers)
    widths = tuple(int(w) for w in widths)
    if len(layers) != 4 or min(layers) < 1:
        raise ValueError(f"layers must be four positive block counts, got {layers}")
    if len(widths) != 5 or len(kernel_sizes) != 5 or len(downsampling) != 5:
        raise ValueError("widths, kernel_sizes and downsampling need 5 entries each (stem + 4 stages)")
    for w in widths[1:]:
        if w % expansion:
            raise ValueError(f"stage width {w} is not divisible by expansion {expansion}")
    bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
    stem_module = stem(in_channels, widths[0], kernel_size=_spatial_kernel(kernel_sizes[0], "stem"),
                       stride=2 if downsampling[0] else 1, **bn)
    block_args = dict(block_args or {})
    stages = []
    c_in = widths[0]
    for s in range(4):
        c_out = widths[s + 1]
        width = c_out // expansion
        k = _spatial_kernel(kernel_sizes[s + 1], f"stage conv{s + 2}")
        blocks = []
        for i in range(layers[s]):
            stride = 2 if (i == 0 and downsampling[s + 1]) else 1
            block_in = c_in if i == 0 else c_out
            branch = block(block_in, width, c_out, stride=stride, kernel_size=k, **block_args, **bn)
            blocks.append(ResBlock(block_in, c_out, stride=stride, branch=branch, **bn))
        stages.append(ResStage(blocks))
        c_in = c_out
    backbone = ResNetBackbone(stem_module, stages)
    head = VideoHead(widths[-1], num_classes, dropout=dropout)
    arch = dict(block=getattr(block, "__name__", type(block).__name__), layers=layers, widths=widths,
                expansion=expansion, num_classes=num_classes)
    return VideoResNet(backbone, head, channels_last=channels_last, arch=arch)
