"""State-dict converters for foreign checkpoints: one small, tested function per source.

* :func:`official_filter`: official TAda2D ``.pyth`` model states (and ours): strip wrapper
  prefixes (``module.`` from DDP, ``_orig_mod.`` from torch.compile). Names and shapes are
  already ours.
* :func:`resnet50_2d_filter`: a torchvision or timm ImageNet ResNet (``conv1``, ``bn1``,
  ``layerL.j.convN``, ``layerL.j.downsample.{0,1}``, ``fc``) -> our keys, as the official in1k init maps them.
* :func:`convnext_2d_filter`: an ImageNet ConvNeXt-V1 state dict in the original release's names
  (``downsample_layers``, ``stages``, ``norm``, ``head``) -> TAdaConvNeXtV2 / its plain twin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from torch import Tensor

__all__ = ["convnext_2d_filter", "official_filter", "resnet50_2d_filter", "strip_prefixes"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove DDP / torch.compile prefixes, however nested (``module._orig_mod.x`` -> ``x``)."""
    out = {}
    for key, value in state_dict.items():
        k = key
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        if k in out:
            raise ValueError(f"state dict key {key!r} collides with another after removing wrapper prefixes")
        out[k] = value
    return out


def official_filter(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official TAda2D / tada state dicts share names and shapes; only wrappers are removed."""
    return strip_prefixes(state_dict)


_LAYER_RE = re.compile(r"^layer(\d+)\.(\d+)\.(conv|bn)(\d)\.(\w+)$")
_DOWN_RE = re.compile(r"^layer(\d+)\.(\d+)\.downsample\.([01])\.(\w+)$")
_LETTER = {"1": "a", "2": "b", "3": "c"}


def resnet50_2d_key(key: str) -> str | None:
    """Our name for one torchvision/timm ResNet key; None for the classifier (``fc.*``)."""
    if key.startswith("fc."):
        return None
    if key == "conv1.weight":
        return "backbone.conv1.a.weight"
    if key.startswith("bn1."):
        return "backbone.conv1.a_bn." + key[len("bn1."):]
    m = _LAYER_RE.match(key)
    if m:
        layer, block, kind, n, leaf = m.groups()
        if n not in _LETTER:
            raise ValueError(f"ImageNet ResNet key {key!r}: unexpected conv/bn index {n}")
        prefix = f"backbone.conv{int(layer) + 1}.res_{int(block) + 1}.conv_branch.{_LETTER[n]}"
        return f"{prefix}.{leaf}" if kind == "conv" else f"{prefix}_bn.{leaf}"
    m = _DOWN_RE.match(key)
    if m:
        layer, block, idx, leaf = m.groups()
        prefix = f"backbone.conv{int(layer) + 1}.res_{int(block) + 1}"
        return f"{prefix}.short_cut.{leaf}" if idx == "0" else f"{prefix}.short_cut_bn.{leaf}"
    raise ValueError(f"ImageNet ResNet key {key!r} has no counterpart (not a torchvision/timm ResNet?)")


def resnet50_2d_filter(
    state_dict: Mapping[str, Tensor], target_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], list[str]]:
    """Map an ImageNet 2-D ResNet state dict onto our keys and the target's shapes, as the official in1k init does.

    A (Cout, Cin, kh, kw) conv weight becomes (Cout, Cin, 1, kh, kw) for a frame conv, or
    (1, 1, Cout, Cin, kh, kw) for a TAdaConv, as the target asks. Returns the converted dict and
    the dropped classifier keys. Keys with no target and shape mismatches are errors, because they
    mean the file is not the ResNet this model expects (say, a ResNet-101 for an R50).
    """
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    mismatched: list[str] = []
    for key, value in strip_prefixes(state_dict).items():
        new = resnet50_2d_key(key)
        if new is None:
            dropped.append(key)
            continue
        if new not in target_shapes:
            unknown.append(f"{key} -> {new}")
            continue
        shape = tuple(target_shapes[new])
        if tuple(value.shape) != shape:
            if value.dim() == 4 and len(shape) == 5 and shape == (value.shape[0], value.shape[1], 1, *value.shape[2:]):
                value = value.unsqueeze(2)
            elif value.dim() == 4 and len(shape) == 6 and shape == (1, 1, *value.shape):
                value = value[None, None]
            else:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {new} {shape}")
                continue
        out[new] = value
    _check_fit("ResNet", unknown, mismatched)
    return out, dropped


def _check_fit(family: str, unknown: list[str], mismatched: list[str]) -> None:
    """Refuse ImageNet weights with keys that have no target or shapes that do not fit, naming a few of each."""
    if unknown or mismatched:
        raise ValueError(
            f"ImageNet {family} weights do not fit this model: "
            + (f"{len(unknown)} keys with no target (e.g. {unknown[:3]}); " if unknown else "")
            + (f"{len(mismatched)} shape mismatches (e.g. {mismatched[:3]})" if mismatched else "")
        )


def _inflate_centre(value: Tensor, frames: int) -> Tensor:
    """(Cout, Cin, kh, kw) -> (Cout, Cin, frames, kh, kw): the 2-D kernel at the centre tap, zeros elsewhere."""
    out = value.new_zeros(value.shape[0], value.shape[1], frames, *value.shape[2:])
    out[:, :, frames // 2] = value
    return out


def convnext_2d_filter(
    state_dict: Mapping[str, Tensor], target_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], list[str]]:
    """Map an ImageNet ConvNeXt-V1 state dict onto a video ConvNeXt, as the official conversion does.

    Keys get the ``backbone.`` prefix and the classifier (``head.*``) is dropped. The stem kernel
    (d0, 3, 4, 4) is inflated to (d0, 3, kt, 4, 4) with the 2-D kernel at the centre temporal tap
    and zeros elsewhere (so with temporal stride 2 output frame t first sees input frame 2t); the
    depthwise kernels become the TAdaConv layout (1, 1, d, 1, 7, 7) with bias (1, 1, d) (or a
    (d, 1, 1, 7, 7) frame conv for the plain twin); the (1, 2, 2) downsample convs get a temporal
    axis; LayerNorms, pointwise Linears, ``gamma`` and the final norm load unchanged. Returns the
    converted dict and the dropped keys. Keys with no target or another shape are errors: the
    file is not a ConvNeXt of this size.
    """
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    mismatched: list[str] = []
    for key, value in strip_prefixes(state_dict).items():
        if "head" in key:
            dropped.append(key)
            continue
        new = "backbone." + key
        if new not in target_shapes:
            unknown.append(key)
            continue
        shape = tuple(target_shapes[new])
        if tuple(value.shape) != shape:
            if new == "backbone.downsample_layers.0.0.weight" and value.dim() == 4 and len(shape) == 5 \
                    and shape[:2] + shape[3:] == tuple(value.shape):
                value = _inflate_centre(value, shape[2])
            elif value.numel() == math.prod(shape) and value.dim() < len(shape):
                value = value.reshape(shape)  # (d,1,7,7) -> (1,1,d,1,7,7); (d,) -> (1,1,d); (d',d,2,2) -> (d',d,1,2,2)
            else:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {new} {shape}")
                continue
        out[new] = value
    _check_fit("ConvNeXt", unknown, mismatched)
    return out, dropped
