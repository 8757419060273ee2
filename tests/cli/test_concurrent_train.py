"""Concurrent child runs: one thread each, readable output, a failure or a signal stops them all."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tada.cli.concurrent_train import (
    CONSOLE_LOG,
    ConcurrentRunFailed,
    TrainJob,
    child_environment,
    tada_command,
    train_concurrently,
)

# A stand-in for a training run: prints, then waits (up to a minute) for SIGTERM, on which it
# "saves" (a line in its log) and exits 143 as the engine does.
PATIENT = """
import signal, sys, time
def stop(signum, frame):
    print('saved a checkpoint', flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
print('started', flush=True)
for _ in range(600):
    time.sleep(0.1)
print('finished', flush=True)
"""


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _collect() -> tuple[list[str], callable]:
    lines: list[str] = []
    return lines, lines.append


def test_children_get_one_thread_and_their_lines_are_prefixed(tmp_path: Path) -> None:
    code = "import os, torch; print('threads', os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"
    jobs = [TrainJob(name, _python(code), tmp_path / name) for name in ("TSN", "TAda2D")]
    lines, echo = _collect()
    seconds = train_concurrently(jobs, echo=echo, poll_seconds=0.05)
    assert seconds > 0
    assert sorted(lines) == ["[TAda2D] threads 1 1", "[TSN] threads 1 1"]
    for job in jobs:
        assert (job.output_dir / CONSOLE_LOG).read_text() == "threads 1 1\n"


def test_a_failed_run_stops_the_other_and_is_named(tmp_path: Path) -> None:
    jobs = [TrainJob("TSN", _python(PATIENT), tmp_path / "tsn"),
            TrainJob("TAda2D", _python("import time, sys; time.sleep(1); print('boom'); sys.exit(3)"),
                     tmp_path / "tada2d")]
    lines, echo = _collect()
    started = time.monotonic()
    with pytest.raises(ConcurrentRunFailed, match=r"the TAda2D run failed \(exit code 3\).*Stopped the other runs: TSN"
                       ) as err:
        train_concurrently(jobs, echo=echo, poll_seconds=0.05)
    assert err.value.exit_code == 1 and time.monotonic() - started < 30
    assert "[TSN] saved a checkpoint" in lines and "[TSN] finished" not in lines
    assert str(tmp_path / "tada2d" / CONSOLE_LOG) in str(err.value)


def test_a_signal_to_the_parent_stops_every_child(tmp_path: Path) -> None:
    jobs = [TrainJob(name, _python(PATIENT), tmp_path / name) for name in ("TSN", "TAda2D")]
    lines, echo = _collect()

    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 30
        while lines.count("[TSN] started") + lines.count("[TAda2D] started") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.getsignal(signal.SIGINT)
    threading.Thread(target=interrupt_when_started, daemon=True).start()
    with pytest.raises(ConcurrentRunFailed, match="stopped by SIGINT") as err:
        train_concurrently(jobs, echo=echo, poll_seconds=0.05)
    assert err.value.exit_code == 130
    assert lines.count("[TSN] saved a checkpoint") == 1 and lines.count("[TAda2D] saved a checkpoint") == 1
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is put back


def test_child_environment_and_command() -> None:
    env = child_environment(2, base={"PYTHONPATH": "/elsewhere"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert env["PYTHONPATH"].endswith(os.pathsep + "/elsewhere") and Path(env["PYTHONPATH"].split(os.pathsep)[0],
                                                                          "tada").is_dir()
    assert tada_command(["train", "--cfg", "x.yaml"])[1:] == ["-m", "tada", "train", "--cfg", "x.yaml"]
    with pytest.raises(ValueError, match="threads"):
        child_environment(0)
    with pytest.raises(ValueError, match="distinct names"):
        train_concurrently([TrainJob("a", ["true"], Path("x")), TrainJob("a", ["true"], Path("y"))])
