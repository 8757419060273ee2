"""Independent `tada train` runs at the same time, each a child process with its own few threads.

On a machine with few cores two small trainings side by side, each with one intra-op thread and no
data-loader worker, keep the cores busier than the same trainings one after the other with a
thread per core: small convolutions and the per-batch decoding do not scale to many threads.

Each child is ``python -m tada train ...`` with ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set in its
environment (torch takes its intra-op thread count from them). Its console output goes to
``console.log`` in its run folder and, each line prefixed with the run's name, to this process's
stdout, so the runs' lines stay readable side by side.

Stopping: when a child fails, the others get SIGTERM (the engine saves a checkpoint after its
current step and exits) and :class:`ConcurrentRunFailed` names the failed run. Ctrl-C reaches the
children from the terminal as SIGINT; this process then sends SIGTERM to any still running (which
a child that already got SIGINT ignores: it is saving; a second SIGINT would make it quit without
saving), waits for them and raises :class:`ConcurrentRunFailed` with the shell's 130. SIGTERM to
this process is passed on the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import tada
from tada.errors import TadaError

__all__ = ["ConcurrentRunFailed", "TrainJob", "child_environment", "tada_command", "train_concurrently"]

CONSOLE_LOG = "console.log"


@dataclass(frozen=True)
class TrainJob:
    """One run: its name (the prefix of its lines), the command line of its process, its run folder."""

    name: str
    command: Sequence[str]
    output_dir: Path


def tada_command(argv: Sequence[str]) -> list[str]:
    """The command line of ``tada ARGV...`` in this Python (``python -m tada``)."""
    return [sys.executable, "-m", "tada", *argv]


class ConcurrentRunFailed(TadaError):
    """A child run failed or the runs were stopped by a signal; ``exit_code`` is what the shell reports."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def child_environment(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child run: ``threads`` intra-op threads, and this tada importable."""
    if threads < 1:
        raise ValueError(f"threads per run must be >= 1, got {threads}")
    env = dict(os.environ if base is None else base)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    package_root = str(Path(tada.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Child:
    """A started run, its output pump (log file + prefixed echo) and its outcome."""

    def __init__(self, job: TrainJob, env: dict[str, str], echo: Callable[[str], None]) -> None:
        self.job = job
        job.output_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = job.output_dir / CONSOLE_LOG
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the pump thread)
        self.proc = subprocess.Popen(
            list(job.command), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
        )
        self._pump = threading.Thread(target=self._copy, args=(self.proc.stdout, echo), daemon=True)
        self._pump.start()

    def _copy(self, stream: TextIO, echo: Callable[[str], None]) -> None:
        try:
            for line in stream:
                self._log.write(line)
                self._log.flush()
                echo(f"[{self.job.name}] {line.rstrip()}")
        finally:
            self._log.close()

    def finish(self, timeout: float | None = None) -> int:
        code = self.proc.wait(timeout=timeout)
        self._pump.join()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def _printer() -> Callable[[str], None]:
    lock = threading.Lock()

    def echo(line: str) -> None:
        with lock:
            print(line, flush=True)

    return echo


def train_concurrently(jobs: Sequence[TrainJob], *, threads: int = 1, poll_seconds: float = 0.2,
                       stop_grace_seconds: float = 300.0, echo: Callable[[str], None] | None = None) -> float:
    """Run the jobs as concurrent children (see the module docstring); returns the wall time in seconds.

    Raises :class:`ConcurrentRunFailed` when a child exits non-zero (the others stopped) or on
    SIGINT / SIGTERM (all stopped, their checkpoints saved by the engine).
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"concurrent runs need distinct names, got {names}")
    env = child_environment(threads)
    echo = echo or _printer()
    started = time.perf_counter()
    children: list[_Child] = []
    previous = _on_signals(_raise_stop)
    try:
        for job in jobs:
            children.append(_Child(job, env, echo))
        failed = _watch(children, poll_seconds)
    except (_Stop, KeyboardInterrupt) as stop:
        signum = stop.signum if isinstance(stop, _Stop) else signal.SIGINT
        _on_signals(signal.SIG_IGN)  # while the children save: one Ctrl-C was enough
        for child in children:
            child.stop()
        _wait_all(children, stop_grace_seconds)
        raise ConcurrentRunFailed(
            f"stopped by {signal.Signals(signum).name}: the runs {', '.join(names)} saved a checkpoint to resume "
            f"from (run the same command again)", exit_code=128 + signum) from None
    finally:
        _on_signals(previous)
    if failed is not None:
        child, code = failed
        others = [c.job.name for c in children if c is not child]
        raise ConcurrentRunFailed(
            f"the {child.job.name} run failed (exit code {code}); its output: {child.log_path}"
            + (f". Stopped the other runs: {', '.join(others)}" if others else ""), exit_code=1)
    return time.perf_counter() - started


def _watch(children: list[_Child], poll_seconds: float) -> tuple[_Child, int] | None:
    """Wait for all children; on the first failure stop the rest. Returns the first failed child and code."""
    failed: tuple[_Child, int] | None = None
    running = list(children)
    while running:
        for child in list(running):
            code = child.proc.poll()
            if code is None:
                continue
            running.remove(child)
            child.finish()
            if code != 0 and failed is None:
                failed = (child, code)
                for other in running:
                    other.stop()
        if running:
            time.sleep(poll_seconds)
    return failed


def _wait_all(children: list[_Child], grace_seconds: float) -> None:
    deadline = time.monotonic() + grace_seconds
    for child in children:
        try:
            child.finish(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.finish()


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _on_signals(handler) -> dict[int, object] | None:
    """Set ``handler`` for SIGINT and SIGTERM (a dict: per signal) in the main thread; returns the previous ones."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        wanted = handler[signum] if isinstance(handler, dict) else handler
        previous[signum] = signal.signal(signum, wanted)
    return previous
