"""Checkpoint IO: reading and writing model checkpoints, and the training checkpoints of a run.

Reading: official ``.pyth`` files, ours, bare state dicts, ImageNet init. Every file is read with
``torch.load(weights_only=True)``: a pickle that would construct arbitrary objects (and so could
run code) is refused. Loading is strict by default and names every missing, unexpected and
mis-shaped key (the official loader uses ``strict=False`` and only logs; see ``docs/design.md``).
Every file is written atomically (:func:`save_atomic`): a crash leaves the old file or the new
one, never a torn file. :mod:`tada.checkpoint` is the public face of the loading half.

A training checkpoint is a dict with the official keys ``model_state``, ``optimizer_state``,
``epoch`` (0-based index of the last completed epoch) and ``cfg`` (JSON), plus ``tada``: the
position in the schedule (next epoch, iteration inside it, global step), the GradScaler state, the
random generator states of every rank, the best validation result so far and the wall-clock
training time. Everything is plain tensors, numbers and strings, so ``torch.load(weights_only=True)``
reads it.

Names in ``OUTPUT_DIR/checkpoints``: ``checkpoint_epoch_{E:05d}.pyth`` after E completed epochs (as
the official code), and ``checkpoint_epoch_{E:05d}_iter_{I:06d}.pyth`` after I iterations of epoch
E+1; both sort in time order, and the newest is where a run resumes (:func:`latest_checkpoint`).
``best.pyth`` is a hard link to (or copy of) the checkpoint with the best validation top-1.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tada.errors import TadaError
from tada.fileio import atomic_open, fsync_dir
from tada.models.convert import official_filter, resnet50_2d_filter, strip_prefixes

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "InitReport",
    "LoadedCheckpoint",
    "best_path",
    "capture_rng",
    "checkpoint_dir",
    "checkpoint_path",
    "format_names",
    "latest_checkpoint",
    "link_best",
    "list_checkpoints",
    "load_checkpoint",
    "load_in1k",
    "load_state_dict_file",
    "prune_checkpoints",
    "read_checkpoint",
    "remove_stale_temporaries",
    "restore_rng",
    "save_atomic",
    "save_checkpoint",
    "split_state",
    "unwrap",
]

_STATE_KEYS = ("model_state", "state_dict", "model")
_MAX_NAMES = 20
_NAME_RE = re.compile(r"^checkpoint_epoch_(\d{5})(?:_iter_(\d{6}))?\.pyth$")


# --------------------------------------------------------------------------------------------
# Reading and loading model checkpoints
# --------------------------------------------------------------------------------------------
class CheckpointError(TadaError, RuntimeError):
    """A checkpoint file cannot be read or does not fit the model; the message names the keys."""


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` did: the file's epoch, its other entries and the key report."""

    path: str
    epoch: int | None
    extra: dict[str, Any]
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)
    optimizer_loaded: bool = False


@dataclass
class InitReport:
    """What :func:`load_in1k` loaded and which model keys kept their initialisation."""

    path: str
    loaded: list[str]
    missing: list[str]
    dropped: list[str]


def format_names(keys: list[str]) -> str:
    """Up to 20 keys, comma-separated, and how many more: for error messages about state dicts."""
    shown = ", ".join(keys[:_MAX_NAMES])
    return shown + (f", ... ({len(keys) - _MAX_NAMES} more)" if len(keys) > _MAX_NAMES else "")


def _check_torch_file(path: Path) -> None:
    """Fail early, with a reason, on files torch.save cannot have written (a failed download, text)."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path}: the file is empty, not a torch checkpoint")
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch's zip format; legacy pickle protocol >= 2
        return
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text[:200]:
        raise CheckpointError(
            f"{path}: this is an HTML page, not a torch checkpoint (a failed or interrupted download, "
            f"e.g. a Google Drive confirmation page): download the file again"
        )
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: this is a NumPy .npy file, not a torch checkpoint")
    raise CheckpointError(f"{path}: not a torch checkpoint (the file starts with {head[:16]!r})")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU with clear errors; the file must hold a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    _check_torch_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled objects other than tensors and plain "
            f"containers, which could run code when loaded (weights_only=True). Re-save it with only "
            f"state dicts, numbers and strings. Detail: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict (state dict or checkpoint), got {type(obj).__name__}")
    return obj


def split_state(obj: dict[str, Any], path: str | os.PathLike, *,
                 state_key: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(model state dict, the other entries) of a checkpoint or a bare state dict; ``state_key``
    names the entry to read (e.g. ``model_ema_state``) instead of the first usual one."""
    if state_key is not None:
        if not isinstance(obj.get(state_key), Mapping):
            raise CheckpointError(f"{path}: no '{state_key}' entry (top-level keys: {sorted(obj)[:10]})")
        return dict(obj[state_key]), {k: v for k, v in obj.items() if k != state_key}
    for key in _STATE_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            return dict(obj[key]), {k: v for k, v in obj.items() if k != key}
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj), {}
    raise CheckpointError(
        f"{path}: no model state found: expected one of {list(_STATE_KEYS)} or a bare state dict, "
        f"found top-level keys {sorted(obj)[:10]}"
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def load_state_dict_file(path: str | os.PathLike, *,
                         state_key: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The wrapper-free model state dict of a checkpoint file and its other entries."""
    obj = read_checkpoint(path)
    state, extra = split_state(obj, path, state_key=state_key)
    return official_filter(state), extra


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    state_key: str | None = None,
) -> LoadedCheckpoint:
    """Load an official ``.pyth``, one of ours, or a bare state dict into ``model``.

    ``strict=True``: any missing, unexpected or mis-shaped key is a :class:`CheckpointError` that
    names them, and nothing is loaded. ``strict=False`` loads every key whose name and shape match
    and reports the rest in the returned :class:`LoadedCheckpoint` (never silently).
    With ``optimizer``, the file must hold ``optimizer_state``, which is loaded too. ``state_key``
    selects the weights entry (``model_ema_state`` for the EMA weights).
    """
    state, extra = load_state_dict_file(path, state_key=state_key)
    target = unwrap(model)
    own = target.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {format_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {format_names(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches: {format_names(mismatched)}")
        raise CheckpointError(f"{path}: checkpoint does not fit the model: " + "; ".join(parts))
    bad = {m.split(":", 1)[0] for m in mismatched}
    loadable = {k: v for k, v in state.items() if k in own and k not in bad}
    target.load_state_dict(loadable, strict=strict)
    epoch = extra.get("epoch")
    result = LoadedCheckpoint(
        path=str(path),
        epoch=int(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else None,
        extra={k: v for k, v in extra.items() if k not in ("optimizer_state",)},
        missing_keys=missing,
        unexpected_keys=unexpected,
        mismatched_keys=mismatched,
    )
    if optimizer is not None:
        if "optimizer_state" not in extra:
            raise CheckpointError(f"{path}: an optimizer state was requested but the file has no 'optimizer_state'")
        try:
            optimizer.load_state_dict(extra["optimizer_state"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: optimizer_state does not fit the optimizer: {err}") from err
        result.optimizer_loaded = True
    return result


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    **extra: Any,
) -> Path:
    """Write the official layout ``{"model_state", "optimizer_state", "epoch", ...extra}`` atomically.

    ``extra`` values must be weights_only-loadable (tensors, numbers, strings, plain containers).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj: dict[str, Any] = {"model_state": unwrap(model).state_dict(), "epoch": int(epoch)}
    if optimizer is not None:
        obj["optimizer_state"] = optimizer.state_dict()
    clash = set(extra) & set(obj)
    if clash:
        raise ValueError(f"extra entries {sorted(clash)} clash with the checkpoint's own keys")
    obj.update(extra)
    return save_atomic(obj, path)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the complete new one, never a torn file.
    """
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)



# Keys an ImageNet ResNet cannot provide: the TAda extras and the new head.
_IN1K_UNSOURCED = (".b_rf.", ".b_avgpool_bn.", "head.")


def load_in1k(model: nn.Module, path: str | os.PathLike) -> InitReport:
    """Initialise the backbone from a local ImageNet state-dict file of its 2-D counterpart.

    ResNets take a torchvision or timm ResNet: the classifier (``fc``) is dropped;
    routing functions, temporal-pool BNs and the head keep their initialisation (so every TAda
    block starts as the ImageNet bottleneck). A model that declares ``image_weights_filter``
    (a converter like :func:`tada.models.convert.convnext_2d_filter`) and ``image_init_new_keys``
    (substrings of the keys no image model has) uses those instead. Every other backbone key must
    come from the file, with a matching shape: a wrong file (another depth or size, another family)
    is an error, not a partial load. ``num_batches_tracked`` may be absent (old files). A tadafied
    model (:func:`tada.models.tadafy`) takes the state dict of its own 2-D backbone instead (any
    architecture), by ``model.load_image_state_dict``.
    """
    if not str(path):
        raise ValueError("TRAIN.INIT is 'in1k' but no weights file was given (set TRAIN.IN1K_WEIGHTS)")
    obj = read_checkpoint(path)
    state, _ = split_state(obj, path)
    target = unwrap(model)
    if callable(getattr(target, "load_image_state_dict", None)):  # a tadafied 2-D backbone: its own names
        try:
            loaded, missing, dropped = target.load_image_state_dict(strip_prefixes(state))
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from err
        return InitReport(path=str(path), loaded=loaded, missing=missing, dropped=dropped)
    own = target.state_dict()
    convert = getattr(target, "image_weights_filter", resnet50_2d_filter)
    unsourced = tuple(getattr(target, "image_init_new_keys", _IN1K_UNSOURCED))
    try:
        converted, dropped = convert(state, {k: tuple(v.shape) for k, v in own.items()})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from err
    missing = [k for k in own if k not in converted]
    required = [
        k for k in missing if not any(p in k for p in unsourced) and not k.endswith("num_batches_tracked")
    ]
    if required:
        raise CheckpointError(
            f"{path}: ImageNet weights lack {len(required)} backbone keys of this model: {format_names(required)}"
        )
    target.load_state_dict(converted, strict=False)
    return InitReport(path=str(path), loaded=sorted(converted), missing=missing, dropped=dropped)

# --------------------------------------------------------------------------------------------
# The training checkpoints of a run: names, resume lookup, best, pruning
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class CheckpointInfo:
    """A checkpoint file and its position: ``epochs_done`` full epochs plus ``iteration`` more."""

    epochs_done: int
    iteration: int
    path: Path

    @property
    def is_epoch_end(self) -> bool:
        return self.iteration == 0


def checkpoint_dir(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | os.PathLike, epochs_done: int, *, iteration: int = 0) -> Path:
    name = f"checkpoint_epoch_{epochs_done:05d}"
    if iteration:
        name += f"_iter_{iteration:06d}"
    return checkpoint_dir(output_dir) / f"{name}.pyth"


def best_path(output_dir: str | os.PathLike) -> Path:
    return checkpoint_dir(output_dir) / "best.pyth"


def list_checkpoints(output_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """Our checkpoint files in OUTPUT_DIR, oldest first (temporary and foreign files ignored)."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME_RE.match(entry.name)
        if match and entry.is_file():
            found.append(CheckpointInfo(int(match.group(1)), int(match.group(2) or 0), entry))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> CheckpointInfo | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def link_best(src: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Point ``best.pyth`` at ``src`` atomically: a hard link when the filesystem allows, else a copy."""
    src = Path(src)
    dst = best_path(output_dir)
    tmp = dst.with_name(f".best.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # e.g. a filesystem without hard links: copying is the same content
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    tmp.unlink(missing_ok=True)  # rename() does nothing when both names already link the same file
    fsync_dir(dst.parent)
    return dst


def remove_stale_temporaries(output_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a process killed while writing a checkpoint."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete superseded files: every iteration checkpoint older than the newest file, and epoch
    checkpoints beyond the newest ``keep_last`` (0 keeps them all). ``best.pyth`` is never touched
    (a hard link keeps its data alive). Returns the deleted paths."""
    found = list_checkpoints(output_dir)
    if not found:
        return []
    newest = found[-1]
    doomed = [c for c in found if not c.is_epoch_end and c != newest]
    epoch_ends = [c for c in found if c.is_epoch_end]
    if keep_last > 0:
        doomed += epoch_ends[:-keep_last]
    for c in doomed:
        c.path.unlink(missing_ok=True)
    return [c.path for c in doomed]


# --------------------------------------------------------------------------------------------
# Random generator states, as weights_only-safe values
# --------------------------------------------------------------------------------------------
def capture_rng(device: torch.device) -> dict[str, Any]:
    """The python, numpy, torch CPU and (if used) CUDA generator states of this process."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Undo :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
