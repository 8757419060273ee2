"""Real processes: SIGKILL then resume; 1 vs 2 gloo processes or two torchrun nodes; a 1 -> 2 process resume."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_standins import REPO, NoBNNet64, dataset_fn_factory, max_weight_difference, tiny_cfg

from tada.engine import run_pipeline, train
from tada.engine.checkpointing import read_checkpoint

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
    """Killed in step 10 (mid-epoch 2): after a validation, a best link, an iteration checkpoint at
    step 8 and a step 9 that no checkpoint holds.

    The reference ran in one process without iteration checkpoints; this run loads with two
    worker processes: neither may change a bit of the result.
    """
    _, ref = finished_run
    out, marker = tmp_path / "run", tmp_path / "blocked"
    cmd = [sys.executable, WORKER, "--train-only", str(out), "TRAIN.CHECKPOINT_ITER_PERIOD", "2",
           "DATA_LOADER.NUM_WORKERS", "2"]
    proc = subprocess.Popen([*cmd[:2], "--block-at-step", "10", str(marker), *cmd[2:]], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(marker.name, tmp_path, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    names = {p.name for p in (out / "checkpoints").glob("*.pyth")}
    assert "checkpoint_epoch_00001_iter_000002.pyth" in names and "best.pyth" in names
    assert not (out / "train_summary.json").exists()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "auto-resume from" in done.stderr and "epoch 2, iteration 2" in done.stderr
    a = read_checkpoint(ref.last_checkpoint)["model_state"]
    b = read_checkpoint(out / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]


def _records(out: Path, kind: str) -> list[dict]:
    lines = (out / "stats.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["_type"] == kind]


def _files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts}


# After 12 steps, the 1- and 2-process float64 runs (different summation orders) differ by ~2e-16
# relative to each tensor's largest weight; the same runs in float32 by ~2e-5 (a flipped ReLU).
# Each deliberate bug moves the weights by ~0.3.
SAME_RUN_TOLERANCE = 1e-12
BUG_MARGIN = 1e8  # a bug must move the weights by more than 1e-4


# 9 val clips in batches of 2 per rank: the ranks run 2 and 3 val batches (no collective may hang).
GLOO_OPTS = ["OPTIMIZER.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_ITER_PERIOD", "4", "TEST.BATCH_SIZE", "4"]


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory):
    """One process vs two gloo processes with the same global batch, then the two-process job
    retrained once per deliberate bug (engine_worker.BUGS)."""
    opts = GLOO_OPTS
    root = tmp_path_factory.mktemp("gloo")
    one, two, bugs = root / "one", root / "two", root / "bugs"
    run_pipeline(tiny_cfg(one, *opts), model_fn=NoBNNet64, dataset_fn=dataset_fn_factory(num_val=9, num_test=5))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
           "--model", "nobn64", "--bug-runs", str(bugs), str(two), *opts]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return one, two, bugs


def _final_weights(out: Path) -> dict:
    return read_checkpoint(out / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_with_the_same_global_batch(gloo_runs):
    one, two, _ = gloo_runs
    losses = [[r["loss"] for r in _records(out, "train_iter")] for out in (one, two)]
    assert len(losses[0]) == len(losses[1]) == 6  # rank 1 wrote nothing: no duplicated lines
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)  # the loss itself is float32
    vals = [[(r["top1"], r["num_clips"]) for r in _records(out, "val_epoch")] for out in (one, two)]
    assert vals[0] == vals[1]
    results = [json.loads((out / "results.json").read_text()) for out in (one, two)]
    assert results[1]["world_size"] == 2 and results[1]["num_videos"] == results[0]["num_videos"] == 5
    assert results[1]["top1"] == results[0]["top1"] and results[1]["confusion_matrix"] == results[0]["confusion_matrix"]
    assert _files(two) == _files(one)
    a, b = _final_weights(one), _final_weights(two)
    assert all(v.dtype == torch.float64 for v in a.values())
    assert max_weight_difference(a, b) <= SAME_RUN_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("bug", ["undivided_gradients", "same_shard_on_every_rank", "doubled_lr"])
def test_the_process_comparison_catches_a_distributed_bug(gloo_runs, bug):
    """Each bug, injected into the real two-process job, moves the weights far beyond the tolerance."""
    one, _, bugs = gloo_runs
    difference = max_weight_difference(_final_weights(one), _final_weights(bugs / bug))
    assert difference > BUG_MARGIN * SAME_RUN_TOLERANCE, difference


@pytest.mark.slow
def test_a_one_process_run_resumed_by_two_processes_continues_exactly(gloo_runs, tmp_path):
    """Killed after step 5 (checkpoint at step 4), resumed by a 2-process job: the data order and the
    augmentations continue as in one process (only dropout draws could not; this model has none)."""
    one, _, _ = gloo_runs
    out = tmp_path / "resumed"
    fns = {"model_fn": NoBNNet64, "dataset_fn": dataset_fn_factory(num_val=9, num_test=5)}
    train(tiny_cfg(out, *GLOO_OPTS, "TEST.ENABLE", "false"), stop_after_steps=5, **fns)
    assert read_checkpoint(out / "checkpoints" / "checkpoint_epoch_00000_iter_000004.pyth")["tada"]["world_size"] == 1
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
           "--model", "nobn64", "--train-only", str(out), *GLOO_OPTS]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "(epoch 1, iteration 4)" in done.stderr and "random states of 1 processes, this run has 2" in done.stderr
    assert max_weight_difference(_final_weights(one), _final_weights(out)) <= SAME_RUN_TOLERANCE
    vals = [[(r["top1"], r["num_clips"]) for r in _records(o, "val_epoch")] for o in (one, out)]
    assert vals[0] == vals[1] and len(vals[0]) == 2
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_one_process_equal_one_process(gloo_runs, tmp_path):
    """torchrun's multi-node flags, as documented: two "nodes" on this host meet over loopback
    (static rendezvous at node 0's address) and train exactly what one process trains."""
    one, _, _ = gloo_runs
    out, port = tmp_path / "nodes", _free_port()
    nodes = [
        subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
                          "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
                          WORKER, "--model", "nobn64", str(out), *GLOO_OPTS],
                         env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    try:
        errors = [node.communicate(timeout=300)[1] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    assert [node.returncode for node in nodes] == [0, 0], [e[-3000:] for e in errors]
    results = [json.loads((o / "results.json").read_text()) for o in (one, out)]
    assert results[1]["world_size"] == 2 and results[1]["top1"] == results[0]["top1"]
    assert results[1]["confusion_matrix"] == results[0]["confusion_matrix"]
    assert [r["loss"] for r in _records(out, "train_iter")] == pytest.approx(
        [r["loss"] for r in _records(one, "train_iter")], rel=1e-6)
    assert _files(out) == _files(one)  # node 1 wrote nothing
    assert max_weight_difference(_final_weights(one), _final_weights(out)) <= SAME_RUN_TOLERANCE


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
           "--model", "nobn", "--train-only", "--delay", "0.05", str(tmp_path), "LOG_PERIOD", "2"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for_record(tmp_path, "train_iter", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    saved = sorted((tmp_path / "checkpoints").glob("checkpoint_epoch_*.pyth"))
    assert len(saved) == 1 and "_iter_" in saved[0].name, err[-3000:]
    assert err.count("training stopped by SIGINT at epoch 1") == 2 and err.count(f"saved {saved[0]}") == 2
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"auto-resume from {saved[0]}" in done.stderr
    assert (tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth").is_file()
