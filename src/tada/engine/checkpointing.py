"""Training checkpoints: official-compatible files, written atomically, with what exact resume needs.

A file is a dict with the official keys ``model_state``, ``optimizer_state``, ``epoch`` (0-based
index of the last completed epoch) and ``cfg`` (JSON), plus ``tada``: the position in the schedule
(next epoch, iteration inside it, global step), the GradScaler state, the random generator states
of every rank, the best validation result so far and the wall-clock training time. Everything is
plain tensors, numbers and strings, so ``torch.load(weights_only=True)`` reads it.

Names: ``checkpoint_epoch_{E:05d}.pyth`` after E completed epochs (as the official code), and
``checkpoint_epoch_{E:05d}_iter_{I:06d}.pyth`` after I iterations of epoch E+1; both sort in time
order. ``best.pyth`` is a hard link to (or copy of) the checkpoint with the best validation top-1.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tada import checkpoint as checkpoint_io
from tada.fileio import atomic_open, fsync_dir

__all__ = [
    "CheckpointInfo",
    "best_path",
    "capture_rng",
    "checkpoint_dir",
    "checkpoint_path",
    "latest_checkpoint",
    "link_best",
    "list_checkpoints",
    "prune_checkpoints",
    "read_checkpoint",
    "remove_stale_temporaries",
    "restore_rng",
    "save_atomic",
]

_NAME_RE = re.compile(r"^checkpoint_epoch_(\d{5})(?:_iter_(\d{6}))?\.pyth$")


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


def checkpoint_path(output_dir: str | os.PathLike, epochs_done: int, iteration: int = 0) -> Path:
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


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the complete new one, never a torn file.
    """
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint dict on the CPU without executing pickled code (see tada.checkpoint)."""
    return checkpoint_io.read_checkpoint(path)


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
