"""The one adapter from a config to the plain-argument builder."""

from __future__ import annotations

from typing import Any

from torch import nn

from tada.config import ConfigError
from tada.config_schema import SCHEMA, require_implemented
from tada.models.resnet import video_resnet

__all__ = ["build_model", "model_kwargs_from_cfg", "tadafy_kwargs_from_cfg"]

_DEPTHS = (26, 50, 101, 152)


def model_kwargs_from_cfg(cfg: Any) -> dict[str, Any]:
    """Translate VIDEO.BACKBONE.*, VIDEO.HEAD.*, BN.* and TRAIN.CHANNELS_LAST into builder keywords.

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


def build_model(cfg: Any) -> nn.Module:
    """Build the model a config describes (random init; weights are loaded by the caller).

    VIDEO.TADAFY.BACKBONE set: a 2-D backbone made temporally adaptive (:func:`tada.models.tadafy`);
    otherwise the ResNet3D family of VIDEO.BACKBONE. VIDEO.HEAD.ACTIVATION is not applied: the
    model returns logits, the evaluator applies softmax.
    """
    if cfg.VIDEO.TADAFY.BACKBONE:
        return _build_tadafied(cfg)
    unused = [f"VIDEO.TADAFY.{k}" for k, default in _schema_leaf_defaults(SCHEMA["VIDEO"]["TADAFY"], "").items()
              if cfg.get("VIDEO.TADAFY." + k) != default]
    if unused:
        raise ConfigError(f"{', '.join(unused)} set, but VIDEO.TADAFY.BACKBONE is empty: name the 2-D backbone "
                          f"to tadafy, or remove them")
    kwargs = model_kwargs_from_cfg(cfg)
    try:
        return video_resnet(**kwargs)
    except ValueError as err:  # the builder's own checks (widths, kernels, ...): name the config
        raise ConfigError(f"the config's model cannot be built (VIDEO.BACKBONE / VIDEO.HEAD): {err}") from err
