"""TAdaFormer initialisation from an OpenAI CLIP image tower (``ViT-B-16.pt``, ``ViT-L-14.pt``), local files only.

The OpenAI release is a TorchScript archive; a plain state dict with the same names (``visual.*``,
the text tower beside it) is accepted too. Mapping, as the official TAdaFormer code does it:

* ``visual.X`` -> ``backbone.X`` and ``visual.transformer.resblocks.i`` -> ``backbone.layers.i``;
* ``visual.conv1.weight`` (W, 3, p, p) becomes the tubelet kernel (W, 3, k, p, p) with the 2-D
  kernel at the centre tap and zeros elsewhere: at init, token frame t' sees only input frame
  ``stride * t'``;
* the text tower, ``text_projection``, ``logit_scale`` and (unless the model keeps CLIP's output
  projection) ``visual.proj`` are not used; every tensor is cast to the model's float dtype
  (CLIP ships float16).

The TAda branches and the head keep their initialisation; their zeroed ``tada_proj`` makes the
initial network CLIP's image tower applied to every other frame, class tokens averaged over time.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from tada.checkpoint import InitReport

__all__ = ["clip_vit_filter", "load_clip", "read_clip_state_dict"]

# Model keys a CLIP image tower does not provide: the TAda branches and the new head.
_CLIP_UNSOURCED = (".tada.", ".tada2.", "head.")


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def read_clip_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict of an OpenAI CLIP file: a TorchScript archive (the official release) or a saved dict.

    TorchScript archives are opened with ``torch.jit.load`` (TorchScript, not pickle: it cannot run
    arbitrary Python); other files go through the weights-only reader of :mod:`tada.checkpoint`.
    """
    from tada.checkpoint import CheckpointError, read_checkpoint, split_state

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: {path}")
    if _is_torchscript_archive(path):
        try:
            with warnings.catch_warnings():  # the OpenAI release is TorchScript: no other way to read it
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated",
                                        category=DeprecationWarning)
                module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as err:
            raise CheckpointError(f"{path}: not a loadable TorchScript CLIP archive: {err}") from err
        return dict(module.state_dict())
    state, _ = split_state(read_checkpoint(path), path)
    return state


def _inflate_conv1(weight: Tensor, shape: tuple[int, ...]) -> Tensor:
    """(W, 3, p, p) -> (W, 3, k, p, p): the 2-D kernel at temporal tap k // 2, zeros elsewhere."""
    out = weight.new_zeros(shape)
    out[:, :, shape[2] // 2] = weight
    return out


def clip_vit_filter(
    state_dict: Mapping[str, Tensor], target_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, Tensor], list[str]]:
    """Map an OpenAI CLIP state dict onto TAdaFormer keys and shapes; returns (converted, unused keys).

    Raises ValueError when the file is not a CLIP ViT or its image tower does not fit the model
    (another width, depth or patch size): the message names the first offending keys.
    """
    out: dict[str, Tensor] = {}
    unused: list[str] = []
    mismatched: list[str] = []
    for key, value in state_dict.items():
        if not key.startswith("visual."):
            unused.append(key)
            continue
        new = "backbone." + key[len("visual."):].replace("transformer.resblocks.", "layers.", 1)
        if new not in target_shapes:
            unused.append(key)  # visual.proj when the model has no output projection
            continue
        shape = tuple(target_shapes[new])
        if new == "backbone.conv1.weight" and value.dim() == 4 and len(shape) == 5 \
                and shape[:2] + shape[3:] == tuple(value.shape):
            value = _inflate_conv1(value, shape)
        if tuple(value.shape) != shape:
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {new} {shape}")
            continue
        out[new] = value
    if mismatched:
        raise ValueError(f"CLIP weights do not fit this model: {len(mismatched)} shape mismatches "
                         f"(e.g. {mismatched[:3]})")
    if not out:
        raise ValueError("no CLIP image-tower keys ('visual.*') found: not an OpenAI CLIP state dict")
    return out, unused


def load_clip(model: nn.Module, path: str | os.PathLike) -> InitReport:
    """Initialise a TAdaFormer's backbone from a local OpenAI CLIP file; returns an InitReport.

    Every backbone tensor outside the TAda branches must come from the file; a wrong file
    (another CLIP size, a ResNet CLIP, not CLIP at all) is an error naming it, never a partial load.
    """
    from tada.checkpoint import CheckpointError, InitReport, format_names, unwrap

    if not str(path):
        raise ValueError("TRAIN.INIT is 'clip' but no weights file was given (set TRAIN.CLIP_WEIGHTS)")
    state = read_clip_state_dict(path)
    target = unwrap(model)
    own = target.state_dict()
    try:
        converted, unused = clip_vit_filter(state, {k: tuple(v.shape) for k, v in own.items()})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    missing = [k for k in own if k not in converted]
    required = [k for k in missing if not any(p in k or k.startswith(p) for p in _CLIP_UNSOURCED)]
    if required:
        raise CheckpointError(f"{path}: CLIP weights lack {len(required)} backbone keys of this model: "
                              f"{format_names(required)}")
    dtypes = {k: v.dtype for k, v in own.items()}
    target.load_state_dict({k: v.to(dtypes[k]) for k, v in converted.items()}, strict=False)
    return InitReport(path=str(path), loaded=sorted(converted), missing=missing, dropped=unused)
