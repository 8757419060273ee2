"""What a user sees and what stays on disk: text log, JSON-lines stats, TensorBoard, plots, results.

Only rank 0 writes. Every writer here is an object that a run creates and closes; nothing is
configured globally beyond the ``tada`` logger's handlers, which :func:`setup_logging` installs and
the returned callable removes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tada.fileio import atomic_open

__all__ = [
    "StatsWriter",
    "read_stats",
    "setup_logging",
    "write_confusion_png",
    "write_curves",
    "write_json_atomic",
    "write_predictions_csv",
]

LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(name)s: %(lineno)d: %(message)s"


class _NotIterationLines(logging.Filter):
    """Keeps per-iteration lines off the console while a progress bar shows the same numbers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "iteration_line", False)


def setup_logging(log_file: Path | None, *, master: bool, console_iterations: bool) -> Callable[[], None]:
    """Send the ``tada`` logger to stderr (rank 0 only) and to ``log_file``; returns the undo function."""
    logger = logging.getLogger("tada")
    added: list[logging.Handler] = []
    previous_level = logger.level
    logger.setLevel(logging.INFO if master else logging.WARNING)
    fmt = logging.Formatter(LOG_FORMAT)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    if not console_iterations:
        console.addFilter(_NotIterationLines())
    added.append(console)
    if master and log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        added.append(fh)
    for h in added:
        logger.addHandler(h)

    def undo() -> None:
        for h in added:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(previous_level)

    return undo


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


class StatsWriter:
    """JSON lines (sorted keys, 6-decimal floats) in ``stats.jsonl`` and the same scalars in TensorBoard."""

    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool = True):
        self.enabled = enabled
        self.path = output_dir / "stats.jsonl"
        self._tb_dir = output_dir / "tensorboard"
        self._tb = None
        self._want_tb = tensorboard

    def truncate_after(self, global_step: int) -> None:
        """Drop lines past ``global_step`` (left by a run killed after its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [json.dumps(r, sort_keys=True) for r in read_stats(self.path) if r.get("global_step", 0) <= global_step]
        write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def write(self, kind: str, values: dict[str, Any], *, step: int) -> None:
        if not self.enabled:
            return
        record = {"_type": kind, "global_step": step, **{k: _round(v) for k, v in values.items()}}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        if self._want_tb:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self._tb_dir))
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_stats(path: Path) -> list[dict[str, Any]]:
    """The records of a stats.jsonl; a line torn by a killed process (the last one) is skipped."""
    if not path.is_file():
        return []
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines):
                raise ValueError(f"{path}:{number}: not a JSON line") from None
    return records


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_predictions_csv(path: Path, rows: Iterable[dict[str, Any]], *, topk: int = 5) -> None:
    """One line per scored video: path, label, its name, whether top-1 is right, top-k ids/names/scores."""
    header = ["path", "label", "label_name", "correct"]
    for k in range(1, topk + 1):
        header += [f"top{k}_id", f"top{k}_name", f"top{k}_score"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            line = [row["path"], row["label"], row["label_name"], int(row["correct"])]
            for k in range(topk):
                if k < len(row["top_ids"]):
                    line += [row["top_ids"][k], row["top_names"][k], f"{row['top_scores'][k]:.6f}"]
                else:
                    line += ["", "", ""]
            writer.writerow(line)


def _figure(width: float, height: float):
    """A matplotlib figure without pyplot's global state (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def write_confusion_png(path: Path, confusion: Sequence[Sequence[int]], *, class_names: Sequence[str],
                        title: str) -> None:
    """Row-normalised confusion matrix (true class down, predicted across)."""
    import numpy as np

    m = np.asarray(confusion, dtype=np.float64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = min(max(4.0, 0.35 * n + 2.0), 24.0)
    fig = _figure(size, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 40:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(class_names, rotation=90, fontsize=7)
        ax.set_yticklabels(class_names, fontsize=7)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                                color="black" if norm[i, j] > 0.5 else "white")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def write_curves(stats: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """loss.png and accuracy.png from stats.jsonl records (train windows, train epochs, val epochs)."""
    it = [s for s in stats if s["_type"] == "train_iter"]
    ep = [s for s in stats if s["_type"] == "train_epoch"]
    val = [s for s in stats if s["_type"] == "val_epoch"]
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)

    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    if it:
        ax.plot([s["epoch_float"] for s in it], [s["loss"] for s in it], lw=0.8, alpha=0.5, label="train (window)")
    if ep:
        ax.plot([s["epoch"] for s in ep], [s["loss"] for s in ep], marker="o", label="train (epoch)")
    if val:
        ax.plot([s["epoch"] for s in val], [s["loss"] for s in val], marker="s", label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss.png")
    written.append(out_dir / "loss.png")

    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    if ep:
        ax.plot([s["epoch"] for s in ep], [s["top1"] for s in ep], marker="o", label="train top-1")
    if val:
        ax.plot([s["epoch"] for s in val], [s["top1"] for s in val], marker="s", label="val top-1")
        ax.plot([s["epoch"] for s in val], [s["top5"] for s in val], marker="^", ls="--", label="val top-5")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png")
    written.append(out_dir / "accuracy.png")
    return written
