"""The engine with a TAdaFormer: CLIP init through TRAIN.INIT clip, a short training, the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tada.engine import EngineError, run_pipeline

from engine_standins import dataset_fn_factory, tiny_cfg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from test_clip import synthetic_clip  # noqa: E402

VIT = [
    "VIDEO.BACKBONE.META_ARCH", "VisionTransformer", "VIDEO.BACKBONE.BRANCH.NAME", "TAdaFormerBlock",
    "VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_R", "2", "VIDEO.BACKBONE.NUM_FEATURES", "256",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "256", "VIDEO.BACKBONE.DEPTH", "1", "VIDEO.BACKBONE.NUM_HEADS", "4",
    "VIDEO.BACKBONE.PATCH_SIZE", "8", "VIDEO.BACKBONE.INPUT_RES", "32", "DATA.NUM_INPUT_FRAMES", "6",
    "VIDEO.BACKBONE.DROP_PATH", "0.1", "OPTIMIZER.BASE_LR", "0.01",
]


@pytest.mark.slow  # about 30 s on the shared 2-core machine
def test_clip_init_training_and_multi_view_test(tmp_path):
    weights = tmp_path / "ViT-tiny.pt"
    torch.save(synthetic_clip(width=256, layers=1, patch=8, res=32), weights)
    cfg = tiny_cfg(tmp_path / "run", *VIT, "TRAIN.INIT", "clip", "TRAIN.CLIP_WEIGHTS", str(weights),
                   "OPTIMIZER.MAX_EPOCH", "1")
    results = run_pipeline(cfg, dataset_fn=dataset_fn_factory(num_train=8, num_val=4, num_test=4))
    log = (tmp_path / "run" / "training_log.log").read_text()
    assert f"CLIP init from {weights}" in log
    assert results is not None and results["num_videos"] == 4
    assert 0.0 <= results["top1"] <= 100.0


def test_clip_init_without_a_file_names_the_key(tmp_path):
    cfg = tiny_cfg(tmp_path / "run", *VIT, "TRAIN.INIT", "clip", "TEST.ENABLE", "false")
    with pytest.raises(Exception, match="TRAIN.CLIP_WEIGHTS"):
        run_pipeline(cfg, dataset_fn=dataset_fn_factory(num_train=8, num_val=4))
    cfg = tiny_cfg(tmp_path / "run2", *VIT, "TRAIN.INIT", "clip", "TRAIN.CLIP_WEIGHTS", str(tmp_path / "none.pt"),
                   "TEST.ENABLE", "false")
    with pytest.raises(EngineError, match="none.pt"):
        run_pipeline(cfg, dataset_fn=dataset_fn_factory(num_train=8, num_val=4))
