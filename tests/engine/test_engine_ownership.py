"""OUTPUT_DIR belongs to one run: a live run's lock refuses a second one; a changed config refuses to resume."""

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_standins import CONFIG, NoBNNet, dataset_fn_factory, tiny_cfg

from tada.config import load_config, walk_dotted
from tada.engine import EngineError, run_tests, train
from tada.engine.distributed import DistContext
from tada.engine.ownership import (
    RESUME_MAY_CHANGE,
    OutputDirInUseError,
    exclusive_output_dir,
    lock_path,
)

WORKER = str(Path(__file__).resolve().parent / "engine_worker.py")
SOLO = DistContext()


def _env():
    from engine_standins import REPO

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def _last_pid() -> int:
    """The pid of a process that has ended (its reuse within a test is vanishingly unlikely)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _hold(path: Path, owner: dict) -> int:
    """Lock ``path`` through a second open file of this process, with ``owner`` as its record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps(owner).encode())
    return fd


def test_a_live_owner_refuses_another_run_and_its_files_stay(tmp_path):
    fd = _hold(lock_path(tmp_path), {"pid": os.getpid(), "host": socket.gethostname(), "command": "tada train A",
                                     "started": "2026-01-01T00:00:00+00:00"})
    try:
        with pytest.raises(OutputDirInUseError, match=rf"in use by another run \(pid {os.getpid()} on "
                                                      rf"{socket.gethostname()}, .*tada train A\)"):
            train(tiny_cfg(tmp_path, "TEST.ENABLE", "false"), dataset_fn=dataset_fn_factory(), model_fn=NoBNNet)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock"]  # no log, stats or checkpoint
    finally:
        os.close(fd)


def test_tada_test_is_refused_too(tmp_path, finished_run):
    _, ref = finished_run
    cfg = tiny_cfg(tmp_path, "TEST.CHECKPOINT_FILE_PATH", str(ref.last_checkpoint),
                   "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false")
    with exclusive_output_dir(tmp_path, SOLO, command="the training"):
        with pytest.raises(OutputDirInUseError, match="the training"):
            run_tests(cfg, dataset_fn=dataset_fn_factory(num_test=4))
    assert not lock_path(tmp_path).exists()  # released
    assert run_tests(cfg, dataset_fn=dataset_fn_factory(num_test=4))["num_videos"] == 4


def test_the_lock_of_a_dead_run_is_taken_over_with_a_message(tmp_path, caplog):
    dead = _last_pid()
    record = {"pid": dead, "host": socket.gethostname(), "command": "tada train OLD", "started": "then"}
    lock_path(tmp_path).write_text(json.dumps(record))  # left by a killed run; nobody holds it
    with exclusive_output_dir(tmp_path, SOLO, command="tada train NEW"):
        owner = json.loads(lock_path(tmp_path).read_text())
        assert owner["pid"] == os.getpid() and owner["command"] == "tada train NEW"
    assert f"no longer running (pid {dead} on {socket.gethostname()}" in caplog.text


def test_a_dead_runs_lock_still_held_by_its_children_is_taken_over(tmp_path, caplog):
    """Data-loader workers outlive a killed main process for a few seconds, holding its lock file."""
    dead = _last_pid()
    fd = _hold(lock_path(tmp_path), {"pid": dead, "host": socket.gethostname(), "command": "tada train OLD"})
    try:
        with exclusive_output_dir(tmp_path, SOLO, command="tada train NEW"):
            assert json.loads(lock_path(tmp_path).read_text())["pid"] == os.getpid()
        assert f"(pid {dead} on {socket.gethostname()}" in caplog.text and "taking over" in caplog.text
    finally:
        os.close(fd)


def test_a_lock_held_on_another_host_is_never_taken_over(tmp_path):
    fd = _hold(lock_path(tmp_path), {"pid": _last_pid(), "host": "elsewhere", "command": "tada train B"})
    try:
        with pytest.raises(OutputDirInUseError, match=rf"on elsewhere.*delete {lock_path(tmp_path)}"):
            with exclusive_output_dir(tmp_path, SOLO, command="tada train C"):
                pass
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_second_run_while_one_trains_is_refused_then_resumes_after_it_died(tmp_path, caplog):
    """The audit's case: two runs on one folder both "succeeded", mixing checkpoints and stats lines."""
    marker = tmp_path / "blocked"
    out = tmp_path / "run"
    opts = ["TEST.ENABLE", "false", "TRAIN.CHECKPOINT_ITER_PERIOD", "2"]
    proc = subprocess.Popen([sys.executable, WORKER, "--model", "nobn", "--block-at-step", "4", str(marker),
                             str(out), *opts], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the first run did not reach step 4"
            time.sleep(0.02)
        before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        with pytest.raises(OutputDirInUseError, match=rf"pid {proc.pid} on"):
            train(tiny_cfg(out, *opts), dataset_fn=dataset_fn_factory(), model_fn=NoBNNet)
        assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = train(tiny_cfg(out, *opts), dataset_fn=dataset_fn_factory(), model_fn=NoBNNet)
    assert result.trained and "auto-resume" in result.start and "taking over" in caplog.text
    assert not lock_path(out).exists()


@pytest.mark.slow
def test_all_processes_of_a_run_stop_when_rank_0_finds_the_folder_taken(tmp_path):
    with exclusive_output_dir(tmp_path, SOLO, command="the first run"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", WORKER,
               "--model", "nobn", "--train-only", str(tmp_path)]
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("in use by another run (pid") >= 2  # rank 0 and rank 1 both say why
    assert not (tmp_path / "checkpoints").exists()


# --------------------------------------------------------------------------------------------
# The config of a resumed run
# --------------------------------------------------------------------------------------------
def _copy_of(finished, tmp_path: Path) -> Path:
    _, ref = finished
    shutil.copytree(ref.output_dir / "checkpoints", tmp_path / "checkpoints")
    (tmp_path / "config.yaml").write_text("the earlier run's config\n")
    return tmp_path


def test_a_new_config_does_not_continue_an_old_runs_checkpoints(finished_run, tmp_path):
    out = _copy_of(finished_run, tmp_path)
    files = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()}
    changed = tiny_cfg(out, "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "4", "OPTIMIZER.BASE_LR", "0.2",
                       "AUGMENTATION.LABEL_SMOOTHING", "0.1")
    refusal = (r"differs in 2 key\(s\) a resume may not change \(AUGMENTATION.LABEL_SMOOTHING: 0.0 -> 0.1; "
               r"OPTIMIZER.BASE_LR: 0.05 -> 0.2\).*TRAIN.ALLOW_CONFIG_CHANGES true")
    with pytest.raises(EngineError, match=refusal):
        train(changed, dataset_fn=dataset_fn_factory())
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoints").iterdir()} == files  # nothing pruned
    assert (out / "config.yaml").read_text() == "the earlier run's config\n"
    assert not (out / "stats.jsonl").exists()
    allowed = changed.with_overrides(["TRAIN.ALLOW_CONFIG_CHANGES", True, "OPTIMIZER.MAX_EPOCH", 3])
    result = train(allowed, dataset_fn=dataset_fn_factory())
    assert result.trained and "auto-resume" in result.start


def test_a_resume_may_change_how_and_how_long_it_runs(finished_run, tmp_path, caplog):
    out = _copy_of(finished_run, tmp_path)
    cfg = tiny_cfg(out, "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "3", "LOG_PERIOD", "3",
                   "DATA_LOADER.NUM_WORKERS", "1", "TRAIN.KEEP_LAST", "5", "TEST.BATCH_SIZE", "2")
    result = train(cfg, dataset_fn=dataset_fn_factory())
    assert result.trained and "auto-resume" in result.start and result.epochs == 3
    assert "resuming" in caplog.text and "OPTIMIZER.MAX_EPOCH: 2 -> 3" in caplog.text


def test_every_key_a_resume_may_change_exists():
    keys = [k for k, _ in walk_dotted(load_config(CONFIG).to_dict())]
    for allowed in RESUME_MAY_CHANGE:
        hits = [k for k in keys if (k.startswith(allowed) if allowed.endswith(".") else k == allowed)]
        assert hits, f"{allowed} names no config key"
