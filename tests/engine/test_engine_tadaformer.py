"""The engine with a TAdaFormer: CLIP init through TRAIN.INIT clip, a short training, the tests."""

from __future__ import annotations

import pytest
import torch
from engine_standins import dataset_fn_factory, tiny_cfg

from tada.engine import EngineError, run_pipeline

VIT = [
    "VIDEO.BACKBONE.META_ARCH", "VisionTransformer", "VIDEO.BACKBONE.BRANCH.NAME", "TAdaFormerBlock",
    "VIDEO.BACKBONE.BRANCH.ROUTE_FUNC_R", "2", "VIDEO.BACKBONE.NUM_FEATURES", "256",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "256", "VIDEO.BACKBONE.DEPTH", "1", "VIDEO.BACKBONE.NUM_HEADS", "4",
    "VIDEO.BACKBONE.PATCH_SIZE", "8", "VIDEO.BACKBONE.INPUT_RES", "32", "DATA.NUM_INPUT_FRAMES", "6",
    "VIDEO.BACKBONE.DROP_PATH", "0.1", "OPTIMIZER.BASE_LR", "0.01",
    "MODEL.CALIBRATION_CLAMP", "false",  # the synthetic TAda2D config's clamp has no RouteFuncMLP to act on here
]


def clip_image_tower(width: int = 256, patch: int = 8, res: int = 32) -> dict[str, torch.Tensor]:
    """A one-layer OpenAI-layout CLIP image tower (float16, random) and a text key to ignore."""
    gen = torch.Generator().manual_seed(0)
    block = "transformer.resblocks.0."
    shapes = {
        "class_embedding": (width,), "positional_embedding": ((res // patch) ** 2 + 1, width),
        "conv1.weight": (width, 3, patch, patch), "ln_pre.weight": (width,), "ln_pre.bias": (width,),
        "ln_post.weight": (width,), "ln_post.bias": (width,), "proj": (width, 32),
        block + "attn.in_proj_weight": (3 * width, width), block + "attn.in_proj_bias": (3 * width,),
        block + "attn.out_proj.weight": (width, width), block + "attn.out_proj.bias": (width,),
        block + "ln_1.weight": (width,), block + "ln_1.bias": (width,),
        block + "mlp.c_fc.weight": (4 * width, width), block + "mlp.c_fc.bias": (4 * width,),
        block + "mlp.c_proj.weight": (width, 4 * width), block + "mlp.c_proj.bias": (width,),
        block + "ln_2.weight": (width,), block + "ln_2.bias": (width,),
    }
    sd = {"visual." + k: (0.05 * torch.randn(s, generator=gen)).half() for k, s in shapes.items()}
    return {**sd, "text_projection": torch.zeros(8, 4).half()}


@pytest.mark.slow  # about 30 s on the shared 2-core machine
def test_clip_init_training_and_multi_view_test(tmp_path):
    weights = tmp_path / "ViT-tiny.pt"
    torch.save(clip_image_tower(), weights)
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
