"""The engine on real encoded videos (H.264, one undecodable train file): SIGKILL + resume, export, CLI.

One uninterrupted run is the reference; a run killed mid-epoch and restarted with the same command
must end with bit-identical weights, having replaced the broken video at the same moments.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_standins import CONFIG, REPO, tiny_cfg, tiny_overrides

from tada import cli
from tada.data.datasets import build_dataset
from tada.data.synthetic import generate_dataset
from tada.engine import train
from tada.engine.checkpointing import read_checkpoint
from tada.engine.samplers import TrainSampler

WORKER = str(Path(__file__).resolve().parent / "engine_worker.py")
BROKEN = "videos/train/broken_0000.mp4"
BLOCK_AT = 6  # the kill lands in step 6 of 6: steps 4 and 5 done, the last checkpoint at step 4


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    return env


def _seed_replacing_after_the_checkpoint(cfg) -> int:
    """A RANDOM_SEED whose epoch 2 meets the broken video after step 4 (in what the resumed run redoes)."""
    names = [Path(e.path).as_posix() for e in build_dataset(cfg, "train").entries]
    broken = next(i for i, n in enumerate(names) if n.endswith(BROKEN))
    for seed in range(100):
        perm = TrainSampler(len(names), global_batch=4, seed=seed).permutation(1).tolist()
        if broken in perm[4:12]:
            return seed
    raise AssertionError("no seed puts the broken video into the resumed part of epoch 2")


@pytest.fixture(scope="module")
def broken_videos(tmp_path_factory):
    """7 classes x 2 real train videos plus one undecodable file in the train list; the run's overrides."""
    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate_dataset(root, videos_per_class={"train": 2, "val": 1, "test": 1}, lengths=(16, 24),
                                sizes=(40, 56), workers=1)
    (root / BROKEN).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    with open(root / "train_list.txt", "a", encoding="utf-8") as f:
        f.write(f"{BROKEN} 0\n")
    opts = ["DATA.DATA_ROOT_DIR", str(root), "DATA.ANNO_DIR", str(root), "VIDEO.HEAD.NUM_CLASSES",
            str(len(manifest["classes"])), "DATA.MAX_FAILURE_RATIO", "0.5", "TEST.ENABLE", "false",
            "TRAIN.CHECKPOINT_ITER_PERIOD", "2"]
    seed = _seed_replacing_after_the_checkpoint(tiny_cfg(root / "probe", *opts))
    return root, [*opts, "RANDOM_SEED", str(seed)]


@pytest.fixture(scope="module")
def reference_run(broken_videos, tmp_path_factory):
    _, opts = broken_videos
    out = tmp_path_factory.mktemp("reference")
    result = train(tiny_cfg(out, *opts))
    assert result.trained and result.last_checkpoint.name == "checkpoint_epoch_00002.pyth"
    return out, result


@pytest.mark.slow
def test_sigkill_and_resume_on_real_video_with_a_broken_file_is_bit_identical(broken_videos, reference_run,
                                                                              tmp_path):
    _, opts = broken_videos
    ref_out, ref = reference_run
    out, marker = tmp_path / "run", tmp_path / "blocked"
    cmd = [sys.executable, WORKER, "--real-data", str(out), *opts, "DATA_LOADER.NUM_WORKERS", "1"]
    proc = subprocess.Popen([*cmd[:2], "--block-at-step", str(BLOCK_AT), str(marker), *cmd[2:]], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before step {BLOCK_AT}: "
                                 f"{proc.stderr.read()[-3000:]}")
        assert time.monotonic() < deadline, f"step {BLOCK_AT} not reached"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert (out / "checkpoints" / "checkpoint_epoch_00001_iter_000001.pyth").is_file()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "auto-resume from" in done.stderr and "(epoch 2, iteration 1)" in done.stderr
    met = [line for line in done.stderr.splitlines() if "cannot decode" in line]  # after the resume
    assert met and all("broken_0000.mp4" in line and "replaced by another random video" in line for line in met)
    a = read_checkpoint(ref.last_checkpoint)["model_state"]
    b = read_checkpoint(out / "checkpoints" / "checkpoint_epoch_00002.pyth")["model_state"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # the per-iteration losses after the checkpoint are the reference's too
    records = [[json.loads(x) for x in (o / "stats.jsonl").read_text().splitlines()] for o in (ref_out, out)]
    losses = [[(r["global_step"], r["loss"]) for r in rs if r["_type"] == "train_iter"] for rs in records]
    assert losses[0] == losses[1]


def test_a_checkpoint_written_by_training_exports_and_scores_as_in_torch(broken_videos, reference_run, tmp_path,
                                                                        capsys):
    pytest.importorskip("onnxruntime", reason="pip install 'tada[export]'")
    import onnxruntime as ort

    from tada.checkpoint import load_checkpoint
    from tada.models import build_model

    root, opts = broken_videos
    _, ref = reference_run
    overrides = tiny_overrides(tmp_path, *opts)
    onnx_file = tmp_path / "trained.onnx"
    code = cli.main(["export", "--cfg", str(CONFIG), "--checkpoint", str(ref.last_checkpoint), "--output",
                     str(onnx_file), "--exporter", "torchscript", "--dynamic-batch", *overrides])
    assert code == 0, capsys.readouterr().err[-2000:]
    model = build_model(tiny_cfg(tmp_path, *opts)).eval()
    load_checkpoint(model, ref.last_checkpoint)
    clips = build_dataset(tiny_cfg(tmp_path, *opts), "val")
    x = torch.stack([clips[i]["video"] for i in range(3)])
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)


def test_a_training_run_over_max_failure_ratio_stops_with_a_clear_error(broken_videos, tmp_path, capsys):
    root, opts = broken_videos
    argv = ["train", "--cfg", str(CONFIG), *tiny_overrides(tmp_path, *opts, "DATA.MAX_FAILURE_RATIO", "0.0")]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "DATA.MAX_FAILURE_RATIO" in err and "broken_0000.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "train_summary.json").exists()
