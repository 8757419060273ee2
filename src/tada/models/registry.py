"""Named model constructors: ``create_model("tada2d_r50", num_classes=400)``, ``list_models()``.

Each entry is a thin function over its family's builder (:func:`tada.models.resnet.video_resnet`
with its block class, :func:`tada.models.tadaformer.tadaformer`, ...); any keyword overrides the
entry's defaults (e.g. ``widths=(16, 64, 128, 256, 512)`` for a small test model). A name may
carry a zoo tag, ``"tada2d_r50.k400_8x8"``, whose class count becomes the default.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from tada.models.resnet import Base2DBlock, TAda2DBlock, VideoResNet, video_resnet
from tada.models.tadaformer import TAdaFormer, tadaformer

__all__ = ["create_model", "is_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its function name; a duplicate name is an error."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def is_model(name: str) -> bool:
    """True for a registered name, or a registered name with a known zoo tag (``tada2d_r50.k400_8x8``)."""
    arch, _, tag = name.partition(".")
    if arch not in _MODELS:
        return False
    if not tag:
        return True
    from tada.models.zoo import list_weights

    return name in list_weights()


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    checkpoint_path: str = "",
    strict: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; optionally load a local checkpoint (official or ours).

    ``num_classes`` defaults to the zoo tag's classes (``"tada2d_r50.ssv2_8f"`` -> 174), else 400.
    A zoo tag also supplies its architecture options (``"tadaformer_b16.ssv2_16f"`` has the
    temporally enhanced, double TAda branches); explicit keywords override them.
    Nothing is ever downloaded: pretrained weights come from ``checkpoint_path``.
    """
    arch, _, tag = name.partition(".")
    if arch not in _MODELS:
        close = difflib.get_close_matches(arch, list(_MODELS), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise KeyError(f"unknown model {arch!r}{hint} Known: {list_models()}")
    if tag:
        from tada.models.zoo import get_weights

        entry = get_weights(name)
        if num_classes is None:
            num_classes = entry.num_classes
        kwargs = {**entry.model_kwargs, **kwargs}
    model = _MODELS[arch](num_classes=400 if num_classes is None else num_classes, **kwargs)
    if checkpoint_path:
        from tada.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint_path, strict=strict)
    return model


# Registered entry points (explicit, so that they are greppable).
def _tada2d(depth: int, *, route_ratio: int = 4, route_kernels: tuple[int, int] = (3, 3), pool_kernel: int = 3,
            tada_init: str = "official", **kwargs: Any) -> VideoResNet:
    """A ResNet3D with :class:`TAda2DBlock` branches; the block's own keywords go to the block."""
    block_args = dict(route_ratio=route_ratio, route_kernels=tuple(route_kernels), pool_kernel=pool_kernel,
                      tada_init=tada_init)
    return video_resnet(block=TAda2DBlock, block_args=block_args, depth=depth, **kwargs)


@register_model
def tada2d_r26(**kwargs: Any) -> VideoResNet:
    """TAda2D with ResNet-26 bottleneck layout (2, 2, 2, 2)."""
    return _tada2d(26, **kwargs)


@register_model
def tada2d_r50(**kwargs: Any) -> VideoResNet:
    """TAda2D-R50, the paper's model (27,485,472 parameters with 400 classes)."""
    return _tada2d(50, **kwargs)


@register_model
def tada2d_r101(**kwargs: Any) -> VideoResNet:
    """TAda2D with ResNet-101 layout (3, 4, 23, 3)."""
    return _tada2d(101, **kwargs)


@register_model
def tsn_r26(**kwargs: Any) -> VideoResNet:
    """TSN baseline: the same network with plain 2-D bottlenecks, ResNet-26 layout."""
    return video_resnet(block=Base2DBlock, depth=26, **kwargs)


@register_model
def tsn_r50(**kwargs: Any) -> VideoResNet:
    """TSN-R50: a 2-D ResNet-50 over frames with average consensus (the TAda2D baseline)."""
    return video_resnet(block=Base2DBlock, depth=50, **kwargs)


@register_model
def tsn_r101(**kwargs: Any) -> VideoResNet:
    """TSN baseline, ResNet-101 layout."""
    return video_resnet(block=Base2DBlock, depth=101, **kwargs)


@register_model
def tadaformer_b16(**kwargs: Any) -> TAdaFormer:
    """TAdaFormer-B/16: CLIP ViT-B/16 (width 768, 12 layers, 12 heads) with a TAda branch per block.

    104,195,728 parameters with 400 classes; ``temp_enhance=True, double_tada=True`` (the SSv2
    model) has 135,086,766 with 174 classes.
    """
    return tadaformer(**{**dict(width=768, depth=12, heads=12, patch_size=16), **kwargs})


@register_model
def tadaformer_l14(**kwargs: Any) -> TAdaFormer:
    """TAdaFormer-L/14: CLIP ViT-L/14 (width 1024, 24 layers, 16 heads) with a TAda branch per block.

    364,827,024 parameters with 400 classes; the SSv2 model (temporally enhanced, double TAda,
    174 classes) has 474,960,046.
    """
    return tadaformer(**{**dict(width=1024, depth=24, heads=16, patch_size=14), **kwargs})


@register_model
def vit_b16_frames(**kwargs: Any) -> TAdaFormer:
    """The plain CLIP ViT-B/16 over the same tubelets (TAdaFormer-B/16 without its TAda branches)."""
    return tadaformer(**{**dict(width=768, depth=12, heads=12, patch_size=16), **kwargs, "tada": False})


@register_model
def vit_l14_frames(**kwargs: Any) -> TAdaFormer:
    """The plain CLIP ViT-L/14 over the same tubelets (TAdaFormer-L/14 without its TAda branches)."""
    return tadaformer(**{**dict(width=1024, depth=24, heads=16, patch_size=14), **kwargs, "tada": False})
