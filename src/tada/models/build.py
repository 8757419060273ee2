"""The one adapter from a config to the plain-argument builders, one translation per META_ARCH."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tada.config import ConfigError
from tada.config.schema import SCHEMA, require_implemented
from tada.models.convnext import plain_convnext_block, tada_convnext_block, video_convnext
from tada.models.resnet import DEPTH_LAYERS, Base2DBlock, TAda2DBlock, video_resnet
from tada.models.tadaformer import tadaformer
from tada.ops.routing import track_calibration_range

__all__ = [
    "build_model", "convnext_kwargs_from_cfg", "model_kwargs_from_cfg", "resnet_kwargs_from_cfg",
    "tadafy_kwargs_from_cfg",
    "vit_kwargs_from_cfg",
]

# VIDEO.BACKBONE.BRANCH.NAME -> the residual branch class of the ResNet3D family
RESNET_BLOCKS: dict[str, type[nn.Module]] = {"TAda2DBlock": TAda2DBlock, "Base2DBlock": Base2DBlock}
# VIDEO.BACKBONE.BRANCH.NAME -> the block factory of the ConvNeXt family
CONVNEXT_BLOCKS: dict[str, Callable[..., nn.Module]] = {
    "TAdaConvNeXtV2Block": tada_convnext_block, "ConvNeXtBlock": plain_convnext_block,
}
# Keys only the ConvNeXt family reads, with their schema defaults: set otherwise on a ResNet3D, an error.
_CONVNEXT_ONLY = {
    "VIDEO.BACKBONE.DROP_PATH": 0.0,
    "VIDEO.BACKBONE.LARGE_SCALE_INIT_VALUE": 1e-6,
    "VIDEO.BACKBONE.STEM.T_KERNEL_SIZE": 3,
    "VIDEO.BACKBONE.STEM.T_STRIDE": 2,
    "VIDEO.BACKBONE.BRANCH.HEAD_DIM": 48,
}


def resnet_kwargs_from_cfg(cfg: Any) -> dict[str, Any]:
    """Translate VIDEO.BACKBONE.*, VIDEO.HEAD.*, BN.* and TRAIN.CHANNELS_LAST into ResNet3D builder keywords.

    Settings the 2-D ResNet family cannot honour are errors, never ignored: temporal downsampling,
    non-local blocks, other stems or meta-architectures.
    """
    bb = cfg.VIDEO.BACKBONE
    head = cfg.VIDEO.HEAD
    require_implemented(cfg, ("VIDEO.", "BN."), ConfigError, "model settings tada does not implement")
    for key, default in _CONVNEXT_ONLY.items():
        if cfg.get(key) != default:
            raise ConfigError(
                f"{key} is a ConvNeXt setting; the ResNet3D family has no use for it (got {cfg.get(key)!r})")
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
    if bb.DEPTH not in DEPTH_LAYERS:
        raise ConfigError(
            f"VIDEO.BACKBONE.DEPTH must be one of {tuple(DEPTH_LAYERS)} (bottleneck ResNets), got {bb.DEPTH}"
        )
    if bb.NUM_FILTERS[-1] != bb.NUM_OUT_FEATURES:
        raise ConfigError(
            f"VIDEO.BACKBONE.NUM_OUT_FEATURES ({bb.NUM_OUT_FEATURES}) must equal NUM_FILTERS[-1] ({bb.NUM_FILTERS[-1]})"
        )
    pool_k = list(bb.BRANCH.POOL_K)
    if len(pool_k) != 3 or pool_k[1:] != [1, 1]:
        raise ConfigError(f"VIDEO.BACKBONE.BRANCH.POOL_K must be [k, 1, 1], got {pool_k}")
    if bb.BRANCH.NAME not in RESNET_BLOCKS:
        raise ConfigError(f"VIDEO.BACKBONE.BRANCH.NAME {bb.BRANCH.NAME!r} is not a ResNet3D block; "
                          f"choose from {sorted(RESNET_BLOCKS)}")
    block = RESNET_BLOCKS[bb.BRANCH.NAME]
    block_args = {}
    if block is TAda2DBlock:
        block_args = dict(route_ratio=bb.BRANCH.ROUTE_FUNC_R, route_kernels=tuple(bb.BRANCH.ROUTE_FUNC_K),
                          pool_kernel=pool_k[0], tada_init=bb.TADA_INIT)
    return dict(
        block=block,
        block_args=block_args,
        depth=bb.DEPTH,
        widths=tuple(bb.NUM_FILTERS),
        expansion=bb.EXPANSION_RATIO,
        in_channels=bb.NUM_INPUT_CHANNELS,
        num_classes=head.NUM_CLASSES,
        kernel_sizes=tuple(tuple(k) if isinstance(k, (list, tuple)) else k for k in bb.KERNEL_SIZE),
        downsampling=tuple(bool(d) for d in bb.DOWNSAMPLING),
        dropout=float(head.DROPOUT_RATE),
        bn_eps=float(cfg.BN.EPS),
        bn_momentum=float(cfg.BN.MOMENTUM),
        channels_last=bool(cfg.TRAIN.CHANNELS_LAST),
    )


def _schema_leaf_defaults(node: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, leaf in node.items():
        if isinstance(leaf, dict):
            out.update(_schema_leaf_defaults(leaf, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = getattr(leaf, "default", leaf)
    return out


def tadafy_kwargs_from_cfg(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(image-model keywords, tadafy keywords) from VIDEO.TADAFY.*, VIDEO.HEAD.*, BN.* and DATA.NUM_INPUT_FRAMES.

    VIDEO.BACKBONE.* describes the ResNet3D family and means nothing to a tadafied backbone: any of
    it set away from its default (NUM_INPUT_CHANNELS excepted, which is the input's channels) is an
    error, never ignored.
    """
    require_implemented(cfg, ("VIDEO.", "BN."), ConfigError, "model settings tada does not implement")
    td = cfg.VIDEO.TADAFY
    ignored = [
        f"VIDEO.BACKBONE.{k}={cfg.get('VIDEO.BACKBONE.' + k)!r}"
        for k, default in _schema_leaf_defaults(SCHEMA["VIDEO"]["BACKBONE"], "").items()
        if k != "NUM_INPUT_CHANNELS" and cfg.get("VIDEO.BACKBONE." + k) != default
    ]
    if ignored:
        raise ConfigError(f"VIDEO.TADAFY.BACKBONE is set ({td.BACKBONE!r}): these VIDEO.BACKBONE settings have no "
                          f"effect on a tadafied backbone; remove them: {'; '.join(ignored)}")
    for key in ("INCLUDE", "EXCLUDE"):
        patterns = td.get(key)
        if not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"VIDEO.TADAFY.{key} must be a list of module-name patterns, got {patterns!r}")
    if len(td.ROUTE_FUNC_K) != 2:
        raise ConfigError(f"VIDEO.TADAFY.ROUTE_FUNC_K must be two temporal kernel sizes, got {td.ROUTE_FUNC_K}")
    image = dict(num_classes=cfg.VIDEO.HEAD.NUM_CLASSES, in_channels=cfg.VIDEO.BACKBONE.NUM_INPUT_CHANNELS,
                 drop_rate=float(cfg.VIDEO.HEAD.DROPOUT_RATE))
    tada = dict(
        num_frames=cfg.DATA.NUM_INPUT_FRAMES, convs=td.CONVS, stem=td.STEM, include=tuple(td.INCLUDE),
        exclude=tuple(td.EXCLUDE), route_ratio=td.ROUTE_FUNC_R, route_kernels=tuple(td.ROUTE_FUNC_K),
        pool_kernel=td.POOL_K, cal_dim=td.CAL_DIM, classifier=td.CLASSIFIER,
        bn_eps=float(cfg.BN.EPS), bn_momentum=float(cfg.BN.MOMENTUM),
    )
    return image, tada


def _build_tadafied(cfg: Any) -> nn.Module:
    from tada.models.image import create_image_model
    from tada.models.tadafy import tadafy

    image_kwargs, tada_kwargs = tadafy_kwargs_from_cfg(cfg)
    try:
        net = create_image_model(cfg.VIDEO.TADAFY.BACKBONE, **image_kwargs)
        model = tadafy(net, **tada_kwargs)
    except (KeyError, ValueError, TypeError, ImportError) as err:
        raise ConfigError(f"VIDEO.TADAFY: the model cannot be built: {err}") from err
    model.channels_last = bool(cfg.TRAIN.CHANNELS_LAST)
    return model


def convnext_kwargs_from_cfg(cfg: Any) -> dict[str, Any]:
    """Translate the ConvNeXt keys (VIDEO.BACKBONE.DEPTH list, NUM_FILTERS, DROP_PATH, STEM.T_*, BRANCH.*,
    LARGE_SCALE_INIT_VALUE, VIDEO.HEAD.*) into :func:`tada.models.convnext.video_convnext` keywords.

    The ResNet-only keys (KERNEL_SIZE, DOWNSAMPLING, EXPANSION_RATIO, POOL_K, STEM.NAME, BN.*) are
    not read by this family, as in the official ConvNeXt.
    """
    bb = cfg.VIDEO.BACKBONE
    head = cfg.VIDEO.HEAD
    require_implemented(cfg, ("VIDEO.",), ConfigError, "model settings tada does not implement")
    if bb.BRANCH.NAME not in CONVNEXT_BLOCKS:
        raise ConfigError(
            f"VIDEO.BACKBONE.BRANCH.NAME {bb.BRANCH.NAME!r} is not a ConvNeXt block; "
            f"choose from {sorted(CONVNEXT_BLOCKS)}"
        )
    depth = bb.DEPTH
    if not isinstance(depth, list) or len(depth) != 4 or not all(isinstance(d, int) and d >= 1 for d in depth):
        raise ConfigError(f"VIDEO.BACKBONE.DEPTH must list four positive block counts for ConvNeXt, got {depth!r}")
    if len(bb.NUM_FILTERS) != 4:
        raise ConfigError(f"VIDEO.BACKBONE.NUM_FILTERS must list four stage widths for ConvNeXt, got {bb.NUM_FILTERS}")
    if bb.NUM_FILTERS[-1] != bb.NUM_OUT_FEATURES:
        raise ConfigError(
            f"VIDEO.BACKBONE.NUM_OUT_FEATURES ({bb.NUM_OUT_FEATURES}) must equal NUM_FILTERS[-1] ({bb.NUM_FILTERS[-1]})"
        )
    if len(bb.BRANCH.ROUTE_FUNC_K) != 2:
        raise ConfigError(
            f"VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_K must be two temporal kernels, got {bb.BRANCH.ROUTE_FUNC_K}")
    if not 0.0 <= bb.DROP_PATH < 1.0:
        raise ConfigError(f"VIDEO.BACKBONE.DROP_PATH must be in [0, 1), got {bb.DROP_PATH}")
    return dict(
        block=CONVNEXT_BLOCKS[bb.BRANCH.NAME],
        depths=tuple(depth),
        widths=tuple(int(w) for w in bb.NUM_FILTERS),
        in_channels=bb.NUM_INPUT_CHANNELS,
        num_classes=head.NUM_CLASSES,
        stem_t_kernel=bb.STEM.T_KERNEL_SIZE,
        stem_t_stride=bb.STEM.T_STRIDE,
        route_ratio=bb.BRANCH.ROUTE_FUNC_R,
        route_kernels=tuple(bb.BRANCH.ROUTE_FUNC_K),
        head_dim=bb.BRANCH.HEAD_DIM,
        layer_scale=float(bb.LARGE_SCALE_INIT_VALUE),
        drop_path=float(bb.DROP_PATH),
        dropout=float(head.DROPOUT_RATE),
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
    "ConvNeXt": (convnext_kwargs_from_cfg, video_convnext),
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

    VIDEO.TADAFY.BACKBONE set: a 2-D backbone made temporally adaptive (:func:`tada.models.tadafy`);
    otherwise the family VIDEO.BACKBONE.META_ARCH names (:data:`FAMILIES`). VIDEO.HEAD.ACTIVATION is not applied: the
    model returns logits, the evaluator applies softmax.
    """
    model = _build_tadafied(cfg) if cfg.VIDEO.TADAFY.BACKBONE else _build_family(cfg)
    if cfg.MODEL.CALIBRATION_CLAMP:
        try:
            track_calibration_range(model, momentum=float(cfg.BN.MOMENTUM))
        except ValueError as err:
            raise ConfigError(f"MODEL.CALIBRATION_CLAMP: {err}") from err
    return model


def _build_family(cfg: Any) -> nn.Module:
    unused = [f"VIDEO.TADAFY.{k}" for k, default in _schema_leaf_defaults(SCHEMA["VIDEO"]["TADAFY"], "").items()
              if cfg.get("VIDEO.TADAFY." + k) != default]
    if unused:
        raise ConfigError(f"{', '.join(unused)} set, but VIDEO.TADAFY.BACKBONE is empty: name the 2-D backbone "
                          f"to tadafy, or remove them")
    to_kwargs, builder = _family(cfg)
    kwargs = to_kwargs(cfg)
    try:
        return builder(**kwargs)
    except ValueError as err:  # the builder's own checks (widths, kernels, ...): name the config
        raise ConfigError(f"the config's model cannot be built (VIDEO.BACKBONE / VIDEO.HEAD): {err}") from err
