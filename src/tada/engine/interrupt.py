"""Stopping a training run on SIGINT (Ctrl-C) or SIGTERM (a scheduler's stop) without losing it.

While :class:`StopSignals` is active, the first SIGINT or SIGTERM only records the request; the
training loop reads it after an optimizer step (a safe point: weights, optimizer and schedule
position agree), writes a resumable checkpoint there and raises :class:`TrainingInterrupted`, whose
message says how to resume and whose ``exit_code`` is the shell's 128 + signal number. In a
single process a second SIGINT interrupts at once (KeyboardInterrupt), for a loop that is stuck;
in a launched worker it does not: torchrun passes the signal on to its workers after they got it
from the terminal, and kills them itself when they take too long.

Several processes agree on the request with an all-reduce at the loop's logging points, so all
ranks stop after the same step. DataLoader workers forked while the handler is active inherit it
and ignore SIGINT (their parent decides); torch's own handler lets them die of SIGTERM. Once a
stop is requested, a worker's death does not raise in the training process (DataLoader's SIGCHLD
check is suspended until the run ends) and a loader that failed for it ends the epoch's batches:
the loop saves after the last complete step.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import torch

from tada.engine.distributed import DistContext, EngineError, all_reduce

__all__ = ["StopSignals", "TrainingInterrupted"]

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing (SIG_DFL would make a pending signal print a warning)."""


class TrainingInterrupted(EngineError):
    """Training stopped on a signal after saving a resumable checkpoint; ``exit_code`` is 128 + signum."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """Context manager: SIGINT/SIGTERM become a stop request the training loop reads (see the module doc).

    Outside the main thread (where Python cannot install handlers) it records nothing and the
    signals keep their usual effect.
    """

    def __init__(self, *, escalate: bool = True) -> None:
        self.signum: int | None = None
        self.escalate = escalate  # a second SIGINT raises KeyboardInterrupt
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a forked DataLoader worker: the training process decides
        if self.signum is not None:
            if signum == signal.SIGINT and self.escalate:
                raise KeyboardInterrupt
            return
        self.signum = signum
        # DataLoader's SIGCHLD handler raises, wherever the loop is, when a worker dies, and the
        # workers may have got the same signal: the loop finishes its step and saves instead.
        if hasattr(signal, "SIGCHLD") and signal.SIGCHLD not in self._previous:
            self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, _ignore)
        again = " (Ctrl-C again stops at once, without saving)" if self.escalate else ""
        log.warning("%s received: stopping after this iteration and saving a checkpoint to resume from%s",
                    signal.Signals(signum).name, again)

    def agreed(self, ctx: DistContext) -> int | None:
        """The signal that asked this run to stop, agreed by every rank (all ranks must call together)."""
        if not ctx.distributed:
            return self.signum
        flag = torch.tensor([self.signum or 0], dtype=torch.int64, device=ctx.device)
        value = int(all_reduce(ctx, flag, op="max").item())
        return value or None

    @staticmethod
    def interrupted(signum: int, *, where: str, checkpoint: Any, auto_resume: bool) -> TrainingInterrupted:
        """The error to raise once the checkpoint at the stop is written."""
        how = "run the same command again" if auto_resume else \
            "run the same command again with TRAIN.AUTO_RESUME true"
        return TrainingInterrupted(
            f"training stopped by {signal.Signals(signum).name} at {where}; saved {checkpoint}. To continue "
            f"exactly from there, {how}", signum=signum,
        )
