"""Plain 2-D image ResNets with torchvision's parameter names, and a registry of 2-D backbones.

These are image models (input (N, 3, H, W), logits (N, num_classes)) for :func:`tada.models.tadafy`
to turn into video models. Their module names are torchvision's (``conv1``, ``bn1``,
``layerL.j.convN``, ``layerL.j.downsample.{0,1}``, ``fc``), so a torchvision or timm ImageNet ResNet
state dict loads into the ResNet of the same depth unchanged, with neither package installed.
They follow timm's model contract (``forward_features``, ``forward_head(x, pre_logits)``,
``get_classifier``, ``reset_classifier``, ``num_features``).

``create_image_model("timm:<name>", ...)`` builds a timm model where timm is installed (random
init: weights come from a local file, never downloaded).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ImageResNet",
    "create_image_model",
    "image_resnet",
    "list_image_models",
    "register_image_model",
]


class BasicBlock(nn.Module):
    """Two 3x3 convs (stride in the first) and a residual; torchvision's ``BasicBlock`` names."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, *, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the block starts as its shortcut."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 (stride here, ResNet v1.5) - 1x1 with expansion 4; torchvision's ``Bottleneck`` names."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, *, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the block starts as its shortcut."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ImageResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), four stages, global average pool, dropout, ``fc``."""

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], *, num_features: int, num_classes: int,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        for name, module in stem.named_children():  # torchvision keeps the stem at the top level
            self.add_module(name, module)
        self._stem_names = [name for name, _ in stem.named_children()]
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"layer{i}", stage)
        self.num_stages = len(stages)
        self.num_features = num_features
        self.drop_rate = float(drop_rate)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        for name in self._stem_names:
            x = getattr(self, name)(x)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(N, C, h, w) -> logits (N, num_classes): global average pool, dropout, ``fc``."""
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new ``fc`` (PyTorch's default Linear init) where the model lives; 0 removes it."""
        like = self.conv1.weight
        self.fc = (nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
                   if num_classes > 0 else nn.Identity())

    @property
    def num_classes(self) -> int:
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0


def image_resnet(
    *,
    block: type[BasicBlock] | type[Bottleneck] = Bottleneck,
    layers: Sequence[int] = (3, 4, 6, 3),
    widths: Sequence[int] = (64, 64, 128, 256, 512),
    in_channels: int = 3,
    num_classes: int = 1000,
    drop_rate: float = 0.0,
    zero_init_residual: bool = False,
) -> ImageResNet:
    """A 2-D ResNet of ``block`` (:class:`BasicBlock` or :class:`Bottleneck`, or a class with their
    constructor, ``expansion`` and ``zero_init_last``); ``widths``: stem output, then each stage's
    bottleneck width.

    Init as torchvision: Kaiming-normal (fan_out) convs, BN gamma 1 / beta 0 (each block's
    ``zero_init_last`` with ``zero_init_residual``), PyTorch's default Linear init.
    """
    if not isinstance(block, type) or not hasattr(block, "expansion"):
        raise TypeError(f"block must be a residual block class (BasicBlock, Bottleneck), got {block!r}")
    layers, widths = tuple(int(n) for n in layers), tuple(int(w) for w in widths)
    if len(layers) < 1 or min(layers) < 1 or len(widths) != len(layers) + 1:
        raise ValueError(f"layers must be positive block counts and widths one longer (stem first), "
                         f"got layers={layers}, widths={widths}")
    stem = nn.Sequential()
    stem.add_module("conv1", nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False))
    stem.add_module("bn1", nn.BatchNorm2d(widths[0]))
    stem.add_module("relu", nn.ReLU(inplace=True))
    stem.add_module("maxpool", nn.MaxPool2d(3, stride=2, padding=1))
    stages, c_in = [], widths[0]
    for s, (count, width) in enumerate(zip(layers, widths[1:])):
        c_out = width * block.expansion
        blocks = []
        for i in range(count):
            stride = 2 if (i == 0 and s > 0) else 1
            downsample = None
            if i == 0 and (stride != 1 or c_in != c_out):
                downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            blocks.append(block(c_in if i == 0 else c_out, width, stride=stride, downsample=downsample))
        stages.append(nn.Sequential(*blocks))
        c_in = c_out
    model = ImageResNet(stem, stages, num_features=c_in, num_classes=num_classes, drop_rate=drop_rate)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, block):
                m.zero_init_last()
    return model


# ------------------------------------------------------------------------------------------------
# Registry of 2-D backbones
# ------------------------------------------------------------------------------------------------
_IMAGE_MODELS: dict[str, Callable[..., nn.Module]] = {}
TIMM_PREFIX = "timm:"


def register_image_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a 2-D backbone builder under its function name; a duplicate name is an error."""
    if fn.__name__ in _IMAGE_MODELS:
        raise ValueError(f"image model {fn.__name__!r} is already registered")
    _IMAGE_MODELS[fn.__name__] = fn
    return fn


def list_image_models(pattern: str = "*") -> list[str]:
    return sorted(n for n in _IMAGE_MODELS if fnmatch.fnmatchcase(n, pattern))


def create_image_model(name: str, *, num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.0,
                       **kwargs: Any) -> nn.Module:
    """A registered 2-D backbone, or ``"timm:<name>"`` (timm, random init; needs timm installed)."""
    if name.startswith(TIMM_PREFIX):
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"image model {name!r} needs timm, which is not installed (pip install timm)") from err
        return timm.create_model(name[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes,
                                 in_chans=in_channels, drop_rate=drop_rate, **kwargs)
    if name not in _IMAGE_MODELS:
        close = difflib.get_close_matches(name, list(_IMAGE_MODELS), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"unknown image model {name!r}{hint} Known: {list_image_models()} or 'timm:<name>'")
    return _IMAGE_MODELS[name](num_classes=num_classes, in_channels=in_channels, drop_rate=drop_rate, **kwargs)


@register_image_model
def resnet18(**kwargs: Any) -> ImageResNet:
    """torchvision's ResNet-18 layout (basic blocks, (2, 2, 2, 2))."""
    return image_resnet(block=BasicBlock, layers=(2, 2, 2, 2), **kwargs)


@register_image_model
def resnet34(**kwargs: Any) -> ImageResNet:
    """torchvision's ResNet-34 layout (basic blocks, (3, 4, 6, 3))."""
    return image_resnet(block=BasicBlock, layers=(3, 4, 6, 3), **kwargs)


@register_image_model
def resnet50(**kwargs: Any) -> ImageResNet:
    """torchvision's ResNet-50 layout (bottlenecks, (3, 4, 6, 3)); loads its ImageNet state dicts."""
    return image_resnet(block=Bottleneck, layers=(3, 4, 6, 3), **kwargs)


@register_image_model
def resnet10_w16(**kwargs: Any) -> ImageResNet:
    """A small ResNet for CPU experiments: one basic block per stage, widths 16-32-64-128.

    0.31 M parameters before the classifier.
    """
    return image_resnet(block=BasicBlock, layers=(1, 1, 1, 1), widths=(16, 16, 32, 64, 128), **kwargs)
