"""The one adapter from a config to the plain-argument builders, one translation per META_ARCH."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from tada.config import ConfigError
from tada.config_schema import require_implemented
from tada.models.resnet import video_resnet
from tada.models.tadaformer import tadaformer

__all__ = ["build_model", "model_kwargs_from_cfg", "resnet_kwargs_from_cfg", "vit_kwargs_from_cfg"]

_DEPTHS = (26, 50, 101, 152)


def resnet_kwargs_from_cfg(cfg: Any) -> dict[str, Any]:
    """ResNet3D: translate VIDEO.BACKBONE.*, VIDEO.HEAD.*, BN.* and TRAIN.CHANNELS_LAST into builder keywords.

    Settings the 2-D ResNet family cannot honour are errors, never ignored: temporal downsampling,
    non-local blocks, other stems or meta-architectures.
    """
    bb = cfg.VIDEO.BACKBONE
    head = cfg.VIDEO.HEAD
    require_implemented(cfg, ("VIDEO.", "BN."), ConfigError, "model settings tada does not implement")
    if bb.META_ARCH != "ResNet3D":
        raise ConfigError(f"VIDEO.BACKBONE.META_ARCH: only 'ResNet3D' is supported, got {bb.META_ARCH!r}")
    if bb.STEM.NAME != "Base2DStem":
        raise ConfigError(f"VIDEO.BACKBONE.STEM.NAME: only 'Base2DStem' is supported, got {bb.STEM.NAME!r}")
    if bb.NONLOCAL.ENABLE:
        raise ConfigError("VIDEO.BACKBONE.NONLOCAL.ENABLE: non-local blocks are not supported")
    if any(bb.DOWNSAMPLING_TEMPORAL):
        raise ConfigError(
            f"VIDEO.BACKBONE.DOWNSAMPLING_TEMPORAL must be all false (2-D branches), got {bb.DOWNSAMPLING_TEMPORAL}"
        )
    if bb.INITIALIZATION != "kaiming":
        raise ConfigError(f"VIDEO.BACKBONE.INITIALIZATION: only 'kaiming' is supported, got {bb.INITIALIZATION!r}")
    if bb.DEPTH not in _DEPTHS:
        raise ConfigError(f"VIDEO.BACKBONE.DEPTH must be one of {_DEPTHS} (bottleneck ResNets), got {bb.DEPTH}")
    if bb.NUM_FILTERS[-1] != bb.NUM_OUT_FEATURES:
        raise ConfigError(
            f"VIDEO.BACKBONE.NUM_OUT_FEATURES ({bb.NUM_OUT_FEATURES}) must equal NUM_FILTERS[-1] ({bb.NUM_FILTERS[-1]})"
        )
    pool_k = list(bb.BRANCH.POOL_K)
    if len(pool_k) != 3 or pool_k[1:] != [1, 1]:
        raise ConfigError(f"VIDEO.BACKBONE.BRANCH.POOL_K must be [k, 1, 1], got {pool_k}")
    return dict(
        branch=bb.BRANCH.NAME,
        depth=bb.DEPTH,
        widths=tuple(bb.NUM_FILTERS),
        expansion=bb.EXPANSION_RATIO,
        in_channels=bb.NUM_INPUT_CHANNELS,
        num_classes=head.NUM_CLASSES,
        kernel_sizes=tuple(tuple(k) if isinstance(k, (list, tuple)) else k for k in bb.KERNEL_SIZE),
        downsampling=tuple(bool(d) for d in bb.DOWNSAMPLING),
        route_ratio=bb.BRANCH.ROUTE_FUNC_R,
        route_kernels=tuple(bb.BRANCH.ROUTE_FUNC_K),
        pool_kernel=pool_k[0],
        dropout=float(head.DROPOUT_RATE),
        bn_eps=float(cfg.BN.EPS),
        bn_momentum=float(cfg.BN.MOMENTUM),
        tada_init=bb.TADA_INIT,
        channels_last=bool(cfg.TRAIN.CHANNELS_LAST),
    )


def vit_kwargs_from_cfg(cfg: Any) -> dict[str, Any]:
    """VisionTransformer (TAdaFormer): VIDEO.BACKBONE.*, VIDEO.HEAD.* and DATA.NUM_INPUT_FRAMES -> builder keywords.

    As in the official model, the TAdaConvs' BatchNorms use PyTorch's defaults (BN.* is not read),
    and the TAda routing attention has heads of 64 channels.
    """
    bb = cfg.VIDEO.BACKBONE
    head = cfg.VIDEO.HEAD
    require_implemented(cfg, ("VIDEO.",), ConfigError, "model settings tada does not implement")
    if bb.BRANCH.NAME != "TAdaFormerBlock":
        raise ConfigError(
            f"VIDEO.BACKBONE.BRANCH.NAME: META_ARCH VisionTransformer needs 'TAdaFormerBlock', got {bb.BRANCH.NAME!r}"
        )
    features = head.OUTPUT_DIM if bb.REQUIRE_PROJ else bb.NUM_FEATURES
    if bb.NUM_OUT_FEATURES != features:
        what = "VIDEO.HEAD.OUTPUT_DIM (REQUIRE_PROJ is true)" if bb.REQUIRE_PROJ else "NUM_FEATURES"
        raise ConfigError(f"VIDEO.BACKBONE.NUM_OUT_FEATURES ({bb.NUM_OUT_FEATURES}) must equal {what} ({features})")
    if len(bb.BRANCH.ROUTE_FUNC_K) != 2:
        raise ConfigError(f"VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_K needs two kernel sizes, got {bb.BRANCH.ROUTE_FUNC_K}")
    return dict(
        width=bb.NUM_FEATURES,
        depth=bb.DEPTH,
        heads=bb.NUM_HEADS,
        patch_size=bb.PATCH_SIZE,
        input_res=bb.INPUT_RES,
        tubelet_size=bb.TUBLET_SIZE,
        tubelet_stride=bb.TUBLET_STRIDE,
        in_channels=bb.NUM_INPUT_CHANNELS,
        num_classes=head.NUM_CLASSES,
        num_frames=cfg.DATA.NUM_INPUT_FRAMES,
        temp_enhance=bool(bb.TEMP_ENHANCE),
        double_tada=bool(bb.DOUBLE_TADA),
        reduction=bb.REDUCTION,
        route_ratio=bb.BRANCH.ROUTE_FUNC_R,
        route_kernels=tuple(bb.BRANCH.ROUTE_FUNC_K),
        drop_path=float(bb.DROP_PATH),
        attn_dropout=float(bb.ATTN_DROPOUT),
        dropout=float(head.DROPOUT_RATE),
        output_dim=head.OUTPUT_DIM if bb.REQUIRE_PROJ else None,
    )


# VIDEO.BACKBONE.META_ARCH -> (config translation, builder)
FAMILIES: dict[str, tuple[Callable[[Any], dict[str, Any]], Callable[..., nn.Module]]] = {
    "ResNet3D": (resnet_kwargs_from_cfg, video_resnet),
    "VisionTransformer": (vit_kwargs_from_cfg, tadaformer),
}


def _family(cfg: Any) -> tuple[Callable[[Any], dict[str, Any]], Callable[..., nn.Module]]:
    arch = cfg.VIDEO.BACKBONE.META_ARCH
    if arch not in FAMILIES:
        raise ConfigError(f"VIDEO.BACKBONE.META_ARCH {arch!r} is not supported; choose from {sorted(FAMILIES)}")
    return FAMILIES[arch]


def model_kwargs_from_cfg(cfg: Any) -> dict[str, Any]:
    """The builder keywords of the config's model family (VIDEO.BACKBONE.META_ARCH)."""
    return _family(cfg)[0](cfg)


def build_model(cfg: Any) -> nn.Module:
    """Build the model a config describes (random init; weights are loaded by the caller).

    VIDEO.HEAD.ACTIVATION is not applied: the model returns logits, the evaluator applies softmax.
    """
    to_kwargs, builder = _family(cfg)
    kwargs = to_kwargs(cfg)
    try:
        return builder(**kwargs)
    except ValueError as err:  # the builder's own checks (widths, kernels, ...): name the config
        raise ConfigError(f"the config's model cannot be built (VIDEO.BACKBONE / VIDEO.HEAD): {err}") from err
