"""TAdaFormer exports (ONNX through the dynamo exporter, torch.export) reproduce the eager logits."""

from __future__ import annotations

import pytest
import torch

from tada.deploy.export import export_model
from tada.models import create_model

SMALL = dict(width=256, depth=2, heads=4, patch_size=8, input_res=32, num_frames=8)


def _trained_like(seed: int, **variant) -> torch.nn.Module:
    """A small TAdaFormer with every weight random (non-zero TAda branches, BN statistics set)."""
    model = create_model("tadaformer_b16", num_classes=5, **SMALL, **variant)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=gen))
    return model.eval()


@pytest.mark.slow  # the dynamo ONNX exporter takes ~30 s on a shared 2-core machine
def test_onnx_dynamic_batch_matches_eager(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _trained_like(0)
    report = export_model(model, tmp_path / "tadaformer.onnx", fmt="onnx", num_frames=8, crop_size=32,
                          dynamic_batch=True)
    assert report.extra["exporter"] == "dynamo" and report.checked_batches == [1, 3]
    assert report.max_abs_diff < 1e-4


def test_exported_program_of_the_ssv2_variant_matches_eager(tmp_path):
    model = _trained_like(1, temp_enhance=True, double_tada=True)
    out = tmp_path / "tadaformer.pt2"
    report = export_model(model, out, fmt="exported-program", num_frames=8, crop_size=32, batch=2)
    assert report.max_abs_diff < 1e-4
    program = torch.export.load(str(out)).module()
    video = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program(video), model(video), rtol=0, atol=1e-4)


@pytest.mark.slow  # torch.export of a model built from a config, then its check: ~30-50 s on the shared machine
def test_export_from_the_official_config_writes_the_clip_normalisation(tmp_path):
    from pathlib import Path

    from tada.checkpoint import save_checkpoint
    from tada.config import load_config
    from tada.deploy.export import export_from_config
    from tada.deploy.serving import read_sidecar
    from tada.models import build_model

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs/projects/tadaformer/tadaformer_b16_k400_16f.yaml",
                      overrides=["VIDEO.BACKBONE.DEPTH", "1", "VIDEO.BACKBONE.NUM_FEATURES", "256",
                                 "VIDEO.BACKBONE.NUM_OUT_FEATURES", "256", "VIDEO.BACKBONE.NUM_HEADS", "4",
                                 "VIDEO.BACKBONE.PATCH_SIZE", "8", "VIDEO.BACKBONE.INPUT_RES", "32",
                                 "DATA.NUM_INPUT_FRAMES", "8", "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32",
                                 "VIDEO.HEAD.NUM_CLASSES", "5"])
    ckpt = save_checkpoint(tmp_path / "tadaformer.pyth", model=build_model(cfg), epoch=0)
    report = export_from_config(cfg, checkpoint=str(ckpt), fmt="exported-program", output=tmp_path / "m.pt2")
    assert report.max_abs_diff < 1e-4 and report.input_shape == [1, 3, 8, 32, 32]
    sidecar = read_sidecar(report.sidecar)
    assert sidecar["mean"] == [0.48145466, 0.4578275, 0.40821073] and sidecar["num_frames"] == 8
