"""TAdaConvNeXtV2 exports to ONNX (torch.export-based exporter) and a torch.export program with eager parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tada.deploy.export import export_model
from tada.models import create_model

FRAMES, CROP = 6, 32


@pytest.fixture(scope="module")
def tiny_tada_convnext() -> torch.nn.Module:
    """Random weights everywhere (routing, norm_avgpool, gamma), so every path of the graph matters."""
    torch.manual_seed(0)
    model = create_model("tadaconvnextv2_tiny", num_classes=5, depths=(1, 1, 1, 1), widths=(8, 16, 32, 64),
                         head_dim=4, dropout=0.0).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _clips(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, FRAMES, CROP, CROP, generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_onnx_dynamic_batch_matches_eager(tiny_tada_convnext, tmp_path):
    pytest.importorskip("onnxscript", reason="pip install 'tada[export]'")
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "tadaconvnextv2.onnx"
    report = export_model(tiny_tada_convnext, out, fmt="onnx", num_frames=FRAMES, crop_size=CROP, dynamic_batch=True)
    assert report.checked_batches == [1, 3] and report.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _clips(5, 11)  # a batch the export never saw
    got = session.run(None, {"video": x.numpy()})[0]
    with torch.no_grad():
        want = tiny_tada_convnext(x).numpy()
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_exported_program_matches_eager(tiny_tada_convnext, tmp_path):
    out = tmp_path / "tadaconvnextv2.pt2"
    report = export_model(tiny_tada_convnext, out, fmt="exported-program", num_frames=FRAMES, crop_size=CROP, batch=2)
    assert report.max_abs_diff < 1e-5
    program = torch.export.load(str(out)).module()
    x = _clips(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(program(x), tiny_tada_convnext(x), rtol=1e-5, atol=1e-5)
