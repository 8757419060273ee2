"""The engine on CUDA: AMP bf16 / fp16 (GradScaler), torch.compile, no host sync in the hot loop.

Run by benchmarks/gpu_check.sh (`pytest -m cuda`); skipped on machines without CUDA.
"""

import json
import warnings

import pytest
import torch
from engine_standins import NoBNNet, dataset_fn_factory, tiny_cfg

from tada.engine import run_pipeline, train
from tada.engine.checkpointing import read_checkpoint

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = ["NUM_GPUS", "1", "TRAIN.CHANNELS_LAST", "true", "DATA_LOADER.NUM_WORKERS", "2"]


def _train_records(out):
    return [r for r in map(json.loads, (out / "stats.jsonl").read_text().splitlines()) if r["_type"] == "train_iter"]


def test_bf16_training_and_multiview_test_on_cuda(tmp_path):
    cfg = tiny_cfg(tmp_path, *CUDA, "TRAIN.AMP", "bf16")
    results = run_pipeline(cfg, dataset_fn=dataset_fn_factory(fail=(1,)))
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["precision"] == "bf16"
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _train_records(tmp_path))
    assert all(r["gpu_mem_gb"] > 0 for r in _train_records(tmp_path))
    assert results["num_videos"] == 5 and len(results["failed_videos"]) == 1 and results["views"] == 6
    state = read_checkpoint(tmp_path / "checkpoints" / "checkpoint_epoch_00002.pyth")
    assert all(v.device.type == "cpu" for v in state["model_state"].values())


def test_fp16_uses_a_grad_scaler_whose_state_is_checkpointed(tmp_path):
    cfg = tiny_cfg(tmp_path, *CUDA, "TRAIN.AMP", "fp16", "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "1")
    train(cfg, dataset_fn=dataset_fn_factory())
    state = read_checkpoint(tmp_path / "checkpoints" / "checkpoint_epoch_00001.pyth")
    assert state["tada"]["scaler"]["scale"] > 0


def test_compiled_model_trains(tmp_path):
    cfg = tiny_cfg(tmp_path, *CUDA, "TRAIN.AMP", "bf16", "TRAIN.COMPILE", "true", "TEST.ENABLE", "false",
                   "OPTIMIZER.MAX_EPOCH", "1", "TRAIN.EVAL_PERIOD", "0")
    result = train(cfg, dataset_fn=dataset_fn_factory())
    assert result.trained
    state = read_checkpoint(result.last_checkpoint)["model_state"]
    assert not any(k.startswith("_orig_mod") for k in state)  # compiled wrapper names never reach files


def _syncs(tmp_path, num_train, model_fn=None):
    cfg = tiny_cfg(tmp_path, *CUDA, "TRAIN.AMP", "bf16", "TEST.ENABLE", "false", "OPTIMIZER.MAX_EPOCH", "1",
                   "TRAIN.EVAL_PERIOD", "0", "LOG_PERIOD", "1000")
    fns = {"model_fn": model_fn} if model_fn else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train(cfg, dataset_fn=dataset_fn_factory(num_train=num_train), **fns)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.parametrize("model", ["nobn", "tada2d"])
def test_no_host_sync_per_iteration(tmp_path, model):
    """Twice the iterations, the same number of host syncs: none happens inside the loop."""
    model_fn = NoBNNet if model == "nobn" else None
    short = _syncs(tmp_path / "short", 24, model_fn)  # 6 iterations
    long = _syncs(tmp_path / "long", 48, model_fn)  # 12 iterations
    assert len(long) - len(short) < 6, f"{len(short)} vs {len(long)} syncs: {sorted(set(long))[:10]}"
