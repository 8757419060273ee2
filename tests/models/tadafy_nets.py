"""Small image and video CNNs of several architectures, for the tadafy tests (not part of the library)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN/LN statistics and affine parameters, so that eval-mode comparisons mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model


class GroupedDilatedNet(nn.Module):
    """ResNeXt-like bottlenecks (grouped 3x3, a dilated stage), a biased 3x3 that changes channels and
    strides, a plain ``forward`` only (no timm contract) with its classifier named ``fc``."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = _Bottleneck(16, 16, 32, groups=4, dilation=1, stride=1)
        self.transition = nn.Conv2d(32, 48, 3, stride=2, padding=1, bias=True)  # in != out, bias, stride
        self.block2 = _Bottleneck(48, 24, 48, groups=8, dilation=2, stride=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block2(F.relu(self.transition(self.block1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


class _Bottleneck(nn.Module):
    def __init__(self, c_in: int, width: int, c_out: int, *, groups: int, dilation: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out or stride != 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2/EfficientNet block: 1x1 expand, depthwise kxk (stride), squeeze-excite, 1x1 project."""

    def __init__(self, c_in: int, c_out: int, *, kernel: int, stride: int, expand: int = 4,
                 padding_mode: str = "zeros") -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU())
        self.dw = nn.Conv2d(mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False,
                            padding_mode=padding_mode)
        self.dw_bn = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid, max(1, c_in // 4))
        self.project = nn.Sequential(nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.se(F.silu(self.dw_bn(self.dw(self.expand(x))))))
        return out + x if self.residual else out


class MobileNetLike(nn.Module):
    """Depthwise-separable blocks with squeeze-excite, a reflect-padded depthwise conv, an even-kernel
    'same' conv; ``forward`` only, head inside it (global average pool + linear)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, kernel=3, stride=1, padding_mode="reflect"),
            InvertedResidual(16, 24, kernel=5, stride=2),
            InvertedResidual(24, 24, kernel=3, stride=1),
        )
        self.same = nn.Conv2d(24, 32, 4, padding="same", bias=True)  # asymmetric 'same' padding
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.silu(self.same(self.blocks(self.stem(x))))
        return self.classifier(x.mean(dim=(2, 3)))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an (N, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=True)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        y = self.fc2(F.gelu(self.fc1(y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    """ConvNeXt-style: patchify stem, 7x7 depthwise convs with LayerNorm and MLPs, LN + 2x2/2 downsampling;
    timm's contract (``forward_features`` / ``forward_head``), head = global average pool + linear."""

    def __init__(self, num_classes: int = 5, dims: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]), ConvNeXtBlock(dims[0]))
        self.down = nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, stride=2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(dims[1]))
        self.head_fc = nn.Linear(dims[1], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stage2(self.down(self.stage1(self.stem(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head_fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


class R2Plus1DLike(nn.Module):
    """A video CNN of Conv3d layers: (1,k,k) spatial convs, (3,1,1) temporal convs (one with temporal
    stride 2), a full 3x3x3 conv; takes (B, C, T, H, W) clips."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 16, (1, 5, 5), stride=(1, 2, 2), padding=(0, 2, 2), bias=False),
                                  nn.BatchNorm3d(16), nn.ReLU())
        self.spatial = nn.Conv3d(16, 16, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(16)
        self.temporal = nn.Conv3d(16, 24, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn2 = nn.BatchNorm3d(24)
        self.temporal_down = nn.Conv3d(24, 24, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), bias=True)
        self.full = nn.Conv3d(24, 32, 3, stride=(1, 2, 2), padding=1, bias=False)
        self.bn3 = nn.BatchNorm3d(32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = F.relu(self.bn2(self.temporal(F.relu(self.bn1(self.spatial(x))))))
        x = F.relu(self.bn3(self.full(F.relu(self.temporal_down(x)))))
        return self.fc(x.mean(dim=(2, 3, 4)))
