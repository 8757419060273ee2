"""Real processes: SIGKILL at any point then the same command again; two gloo processes vs one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tada.engine import run_pipeline
from tada.engine.checkpointing import read_checkpoint

from engine_standins import REPO, NoBNNet, dataset_fn_factory, tiny_cfg

WORKER = str(Path(__file__).resolve().parent / "engine_worker.py")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def _wait_for(path_glob: str, folder: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.glob(path_glob)):
        if proc.poll() is not None:
            raise AssertionError(f"the worker ended (code {proc.returncode}) before {path_glob} appeared")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path_glob} did not appear in {timeout} s")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_then_same_command_ends_bit_identical(finished_run, tmp_path):
    """Killed mid-epoch 2 (after a validation, a best link and an iteration checkpoint).

    The reference ran in one process without iteration checkpoints; this run loads with two
    worker processes: neither may change a bit of the result.
    """
    _, ref = finished_run
    cmd = [sys.executable, WORKER, "--train-only", "--delay", "0.02", str(tmp_path),
           "TRAIN.CHECKPOINT_ITER_PERIOD", "2", "DATA_LOADER.NUM_WORKERS", "2"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for("checkpoints/checkpoint_epoch_00001_iter_000002.pyth", tmp_path, proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "train_summary.json").exists()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "auto-resume from" in done.stderr
    a = read_checkpoint(ref.last_checkpoint)["model_state"]
    b = read_checkpoint(tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def _records(out: Path, kind: str) -> list[dict]:
    lines = (out / "stats.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["_type"] == kind]


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts}


@pytest.mark.slow
def test_two_gloo_processes_equal_one_with_the_same_global_batch(tmp_path):
    # 9 val clips in batches of 2 per rank: the ranks run 2 and 3 val batches (no collective may hang).
    opts = ["OPTIMIZER.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_ITER_PERIOD", "4", "TEST.BATCH_SIZE", "4"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_pipeline(tiny_cfg(one, *opts), model_fn=NoBNNet, dataset_fn=dataset_fn_factory(num_val=9, num_test=5))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
           "--nobn", str(two), *opts]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    losses = [[r["loss"] for r in _records(out, "train_iter")] for out in (one, two)]
    assert len(losses[0]) == len(losses[1]) == 6  # rank 1 wrote nothing: no duplicated lines
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    vals = [[(r["top1"], r["num_clips"]) for r in _records(out, "val_epoch")] for out in (one, two)]
    assert vals[0] == vals[1]
    results = [json.loads((out / "results.json").read_text()) for out in (one, two)]
    assert results[1]["world_size"] == 2 and results[1]["num_videos"] == results[0]["num_videos"] == 5
    assert results[1]["top1"] == results[0]["top1"] and results[1]["confusion_matrix"] == results[0]["confusion_matrix"]
    assert _files(two) == _files(one)
    a = read_checkpoint(one / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]
    b = read_checkpoint(two / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def _wait_for_record(out: Path, kind: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until stats.jsonl holds a ``kind`` record: the run is demonstrably inside its training loop."""
    deadline = time.monotonic() + timeout
    while not ((out / "stats.jsonl").is_file() and f'"_type": "{kind}"' in (out / "stats.jsonl").read_text()):
        if proc.poll() is not None:
            raise AssertionError(f"the worker ended (code {proc.returncode}) before a {kind} record")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {kind} record in {timeout} s")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_resumable_checkpoint_and_says_how_to_resume(finished_run, tmp_path, signum):
    """SIGINT/SIGTERM mid-epoch: no traceback, a checkpoint at the step reached, exit 128+signum; the
    same command then ends bit-identical to an uninterrupted run. Loader workers get the signal too
    (as a terminal's Ctrl-C sends it to the whole process group)."""
    _, ref = finished_run
    cmd = [sys.executable, WORKER, "--train-only", "--delay", "0.05", str(tmp_path), "DATA_LOADER.NUM_WORKERS", "2",
           "LOG_PERIOD", "1"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_record(tmp_path, "train_iter", proc)
    os.killpg(proc.pid, signum)  # the main process and its DataLoader workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err
    assert f"training stopped by {signal.Signals(signum).name} at epoch" in err and "run the same command again" in err
    saved = sorted((tmp_path / "checkpoints").glob("checkpoint_epoch_*.pyth"))
    assert saved and str(saved[-1]) in err
    assert not (tmp_path / "train_summary.json").exists()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"auto-resume from {saved[-1]}" in done.stderr
    a = read_checkpoint(ref.last_checkpoint)["model_state"]
    b = read_checkpoint(tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


@pytest.mark.slow
def test_sigint_to_two_torchrun_processes_stops_both_at_one_step(tmp_path):
    """Ctrl-C reaches torchrun and both workers: the ranks agree on the step, rank 0 saves once, both
    report it, and the same command continues from that checkpoint to the end."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
           "--nobn", "--train-only", "--delay", "0.05", str(tmp_path), "LOG_PERIOD", "2"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_record(tmp_path, "train_iter", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    saved = sorted((tmp_path / "checkpoints").glob("checkpoint_epoch_*.pyth"))
    assert len(saved) == 1 and "_iter_" in saved[0].name, err[-3000:]
    assert err.count(f"training stopped by SIGINT at epoch 1") == 2 and err.count(f"saved {saved[0]}") == 2
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"auto-resume from {saved[0]}" in done.stderr
    assert (tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth").is_file()
