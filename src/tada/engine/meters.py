"""Meters: what the training loop and validation measure, average and log.

:class:`TrainMeter` keeps the training loss, top-1/top-5 counts and the non-finite check on the
device between reads, so the hot loop never waits for the device (as PySlowFast's ``TrainMeter``,
but summed over samples instead of averaged per batch). Every LOG_PERIOD iterations the loop reads
a window: :meth:`TrainMeter.sync` all-reduces it (one host sync) and :meth:`TrainMeter.log_window`
writes the ``train_iter`` record; at the end of an epoch :meth:`TrainMeter.epoch_record` gives the
``train_epoch`` record from the windows of that epoch. :class:`ValMeter` sums validation loss and
counts exactly across ranks.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import torch
from torch import nn

from tada.engine.distributed import DistContext, EngineError, all_reduce
from tada.engine.metrics import topk_correct
from tada.engine.reporting import StatsWriter

__all__ = ["TrainMeter", "ValMeter", "hms"]

log = logging.getLogger(__name__)

_NO_BAD_STEP = 2**62


def hms(seconds: float) -> str:
    """``H:MM:SS`` of a duration (negative durations read 0:00:00)."""
    seconds = max(int(seconds), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class TrainMeter:
    """Training statistics of one epoch, read (and all-reduced) in windows of iterations.

    Device-side window sums: loss*n over finite losses, correct@1, correct@5, n, and the first
    global step whose loss was not finite. Host-side: the data wait and iterations of the window,
    and the totals of the windows already read in this epoch. With ``show_bar`` a tqdm bar shows
    the epoch's progress and the last window's numbers.
    """

    def __init__(self, *, ctx: DistContext, iters_per_epoch: int, max_epoch: int, stats: StatsWriter,
                 show_bar: bool, clip_grad_norm: float = 0.0) -> None:
        self.ctx = ctx
        self.clip_grad_norm = clip_grad_norm  # > 0: the steps report their gradient norm (clipping on)
        self.iters_per_epoch = iters_per_epoch
        self.max_epoch = max_epoch
        self.stats = stats
        self.show_bar = show_bar
        self.epoch = 0
        self.bar: Any = None
        self._start_totals()
        self._reset_window()

    def _start_totals(self) -> None:
        self.epoch_sums = [0.0, 0.0, 0.0, 0.0]
        self.epoch_data = 0.0
        self.epoch_iters = 0
        self.epoch_clipped = 0
        self.epoch_grad_max = 0.0
        self.epoch_started = time.perf_counter()

    def _reset_window(self) -> None:
        device = self.ctx.device
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)
        self.first_bad = torch.full((), _NO_BAD_STEP, dtype=torch.int64, device=device)
        self.data_time = 0.0
        self.iters = 0
        # gradient norms before clipping (OPTIMIZER.CLIP_GRAD_NORM): the window's largest and how
        # many steps were clipped; never read when clipping is off
        self.grad_max = torch.zeros((), dtype=torch.float64, device=device)
        self.grad_clipped = torch.zeros((), dtype=torch.int64, device=device)
        self.window_started = time.perf_counter()
        self._values: list[float] = [0.0, 0.0, 0.0, 0.0]
        self._grad = (0.0, 0)

    def start_epoch(self, epoch: int, *, start_iter: int) -> None:
        """Zero the totals and the window for epoch ``epoch`` (0-based), resumed at ``start_iter``."""
        self.epoch = epoch
        self._start_totals()
        self._reset_window()
        self.bar = None
        if self.show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=self.iters_per_epoch, initial=start_iter,
                            desc=f"epoch {epoch + 1}/{self.max_epoch}", dynamic_ncols=True, leave=False,
                            file=sys.stderr)

    def add_data_wait(self, seconds: float) -> None:
        """Time the step waited for the loader (the device copy and GPU decode count as compute)."""
        self.data_time += seconds

    @torch.no_grad()
    def update(self, *, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, global_step: int,
               grad_norm: torch.Tensor | None = None) -> None:
        """Add one step to the window, on the device (no host sync). ``grad_norm``: the step's global
        gradient norm before clipping (given when ``clip_grad_norm`` is set)."""
        if grad_norm is not None:
            self.grad_max = torch.maximum(self.grad_max, grad_norm.double())
            self.grad_clipped += (grad_norm > self.clip_grad_norm).to(torch.int64)
        detached = loss.detach().double()
        finite = torch.isfinite(detached)
        correct = topk_correct(logits.detach(), labels, ks=(1, 5)).double()
        n = float(labels.numel())
        self.sums += torch.stack([torch.where(finite, detached, 0.0) * n, correct[0], correct[1],
                                  torch.full((), n, dtype=torch.float64, device=self.ctx.device)])
        self.first_bad = torch.minimum(
            self.first_bad, torch.where(finite, _NO_BAD_STEP, global_step).to(torch.int64)
        )
        self.iters += 1
        if self.bar is not None:
            self.bar.update(1)

    def sync(self) -> int | None:
        """All-reduce the window (one host sync; every rank calls). Returns the first global step
        whose loss was not finite on any rank, or None."""
        sums = all_reduce(self.ctx, self.sums.clone())
        first_bad = int(all_reduce(self.ctx, self.first_bad.clone(), op="min").item())
        self._values = sums.tolist()
        if self.clip_grad_norm > 0:  # DDP averages the gradients first: every rank has the same norms
            self._grad = (float(self.grad_max.item()), int(self.grad_clipped.item()))
        return first_bad if first_bad < _NO_BAD_STEP else None

    def log_window(self, *, iteration: int, global_step: int, lr: float) -> dict[str, Any]:
        """Fold the synced window into the epoch's totals, log it (``train_iter``) and start a new one.

        Returns the record; empty when the window has no iteration.
        """
        values = self._values
        elapsed = time.perf_counter() - self.window_started
        for k in range(4):
            self.epoch_sums[k] += values[k]
        self.epoch_data += self.data_time
        self.epoch_iters += self.iters
        self.epoch_grad_max = max(self.epoch_grad_max, self._grad[0])
        self.epoch_clipped += self._grad[1]
        record: dict[str, Any] = {}
        if self.iters:
            record = self._window_record(values, elapsed=elapsed, iteration=iteration, lr=lr)
            self.stats.write("train_iter", record, step=global_step)
            log.info(
                "epoch %d/%d iter %d/%d loss %.4f top1 %.2f lr %.5f data %.3fs compute %.3fs %.1f clips/s eta %s",
                self.epoch + 1, self.max_epoch, iteration, self.iters_per_epoch, record["loss"], record["top1"],
                record["lr"], record["data_time"], record["compute_time"], record["clips_per_s"],
                hms(record["eta_s"]), extra={"iteration_line": True},
            )
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.4g}",
                                     data=f"{record['data_time']:.3f}s", comp=f"{record['compute_time']:.3f}s")
        self._reset_window()
        return record

    def _window_record(self, values: list[float], *, elapsed: float, iteration: int, lr: float) -> dict[str, Any]:
        ipe = self.iters_per_epoch
        n = max(values[3], 1.0)
        remaining = (self.max_epoch - self.epoch) * ipe - iteration
        per_iter = elapsed / self.iters
        record = {
            "epoch": self.epoch + 1,
            "iter": iteration,
            "epoch_float": self.epoch + iteration / ipe,
            "loss": values[0] / n,
            "top1": 100.0 * values[1] / n,
            "top5": 100.0 * values[2] / n,
            "lr": lr,
            "data_time": self.data_time / self.iters,
            "compute_time": max(per_iter - self.data_time / self.iters, 0.0),
            "clips_per_s": values[3] / elapsed if elapsed > 0 else 0.0,
            "window_s": elapsed,
            "window_clips": int(values[3]),
            "window_data_s": self.data_time,
            "eta_s": remaining * per_iter,
        }
        if self.clip_grad_norm > 0:
            record["grad_norm_max"], record["clipped_steps"] = self._grad
        if self.ctx.device.type == "cuda":
            record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.ctx.device) / 2**30
        return record

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def epoch_record(self, *, lr: float) -> dict[str, Any]:
        """The ``train_epoch`` record of the windows read in this epoch, logged."""
        epochs_done = self.epoch + 1
        n = max(self.epoch_sums[3], 1.0)
        epoch_seconds = time.perf_counter() - self.epoch_started
        record = {
            "epoch": epochs_done,
            "loss": self.epoch_sums[0] / n,
            "top1": 100.0 * self.epoch_sums[1] / n,
            "top5": 100.0 * self.epoch_sums[2] / n,
            "lr": lr,
            "data_time": self.epoch_data / max(self.epoch_iters, 1),
            "epoch_seconds": epoch_seconds,
            "clips_per_s": self.epoch_sums[3] / epoch_seconds if epoch_seconds > 0 else 0.0,
            "data_wait_fraction": self.epoch_data / epoch_seconds if epoch_seconds > 0 else 0.0,
        }
        if self.clip_grad_norm > 0:
            record["grad_norm_max"], record["clipped_steps"] = self.epoch_grad_max, self.epoch_clipped
        if self.ctx.device.type == "cuda":
            record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.ctx.device) / 2**30
        log.info("epoch %d/%d done in %s: loss %.4f top1 %.2f%% (%.1f clips/s, %.0f%% waiting for data)",
                 epochs_done, self.max_epoch, hms(epoch_seconds), record["loss"], record["top1"],
                 record["clips_per_s"], 100 * record["data_wait_fraction"])
        if self.clip_grad_norm > 0:
            log.info("epoch %d/%d gradient norm: largest %.4g, %d of %d steps clipped to %g", epochs_done,
                     self.max_epoch, self.epoch_grad_max, self.epoch_clipped, self.epoch_iters, self.clip_grad_norm)
        return record


class ValMeter:
    """Validation loss, top-1 and top-5 summed exactly over clips and ranks.

    A clip whose logits are not finite (possible in eval mode early in training: TAdaConv scales its
    input by a calibration computed from that input) counts as wrong and is left out of the loss,
    instead of turning the whole validation loss into NaN.
    """

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        # loss over the clips with finite logits, top-1, top-5, clips, clips with non-finite logits
        self.sums = torch.zeros(5, dtype=torch.float64, device=ctx.device)
        self.failed = 0
        self.started = time.perf_counter()

    def add_failed(self, count: int) -> None:
        """Items the loader could not decode (not scored)."""
        self.failed += count

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        finite = torch.isfinite(logits).all(dim=1)
        loss = nn.functional.cross_entropy(logits[finite], labels[finite], reduction="sum")
        correct = topk_correct(logits[finite], labels[finite], ks=(1, 5))
        self.sums += torch.stack([loss.double(), correct[0].double(), correct[1].double(),
                                  torch.full((), float(labels.numel()), dtype=torch.float64, device=self.ctx.device),
                                  (~finite).sum().double()])

    def summary(self) -> dict[str, float]:
        """Loss, top-1 and top-5 (%) over every rank's clips (every rank calls)."""
        all_reduce(self.ctx, self.sums)
        failed_t = torch.tensor([self.failed], dtype=torch.int64, device=self.ctx.device)
        all_reduce(self.ctx, failed_t)
        loss_sum, c1, c5, n, nonfinite = self.sums.tolist()
        if n == 0:
            raise EngineError("validation scored no clip (every val item failed to load)")
        return {
            "loss": loss_sum / (n - nonfinite) if n > nonfinite else float("nan"),
            "nonfinite_clips": int(nonfinite),
            "top1": 100.0 * c1 / n,
            "top5": 100.0 * c5 / n,
            "num_clips": int(n),
            "failed": int(failed_t.item()),
            "seconds": time.perf_counter() - self.started,
        }
