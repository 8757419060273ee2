"""The ONNX sidecar is tied to its model file by the file's SHA-256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tada.checkpoint import save_checkpoint
from tada.config import load_config
from tada.deploy.export import export_from_config
from tada.deploy.serving import OnnxPredictor, SidecarError, read_sidecar, sidecar_path
from tada.fileio import file_sha256
from tada.models import build_model

pytest.importorskip("onnx", reason="pip install 'tada[export]'")
pytest.importorskip("onnxruntime", reason="pip install 'tada[export]'")

REPO = Path(__file__).resolve().parents[2]
SYNTH_CFG = REPO / "configs/projects/tada/synthetic/tsn.yaml"
TINY = [
    "VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
    "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "VIDEO.HEAD.NUM_CLASSES", "3", "DATA.NUM_INPUT_FRAMES", "2",
    "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "TEST.DATASET", "list",
]


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory):
    """Two exports of differently initialised models, each with its sidecar."""
    d = tmp_path_factory.mktemp("exports")
    cfg = load_config(SYNTH_CFG, TINY)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpt = save_checkpoint(d / f"m{seed}.pyth", model=build_model(cfg), epoch=0)
        report = export_from_config(cfg, checkpoint=str(ckpt), fmt="onnx", output=d / f"m{seed}.onnx",
                                    exporter="torchscript", verify=False)
        paths.append(report.path)
    return paths


def test_the_sidecar_records_the_model_hash(two_exports):
    first, _ = two_exports
    sidecar = read_sidecar(first)
    assert sidecar["model_sha256"] == file_sha256(first) and len(sidecar["model_sha256"]) == 64
    assert OnnxPredictor(first).sidecar["model_file"] == first.name


def test_a_model_swapped_under_its_sidecar_is_refused(two_exports, tmp_path):
    first, second = two_exports
    model = tmp_path / first.name
    shutil.copyfile(second, model)  # another model's file under this sidecar
    shutil.copyfile(sidecar_path(first), sidecar_path(model))
    with pytest.raises(SidecarError, match=r"sha256.*not the model"):
        OnnxPredictor(model)


def test_a_sidecar_without_a_hash_is_refused(two_exports, tmp_path):
    first, _ = two_exports
    model = tmp_path / first.name
    shutil.copyfile(first, model)
    data = json.loads(sidecar_path(first).read_text())
    del data["model_sha256"]
    data["sidecar_version"] = 1
    sidecar_path(model).write_text(json.dumps(data))
    with pytest.raises(SidecarError, match="re-export"):
        OnnxPredictor(model)


def test_predictor_from_an_onnx_export_scores_as_its_checkpoint(two_exports):
    import numpy as np

    from tada import Predictor

    first, _ = two_exports
    clip = np.random.default_rng(0).integers(0, 256, size=(12, 36, 44, 3), dtype=np.uint8)
    served = Predictor.from_onnx(first, views=(2, 1), batch_size=3)
    assert served.is_onnx and served.cfg.DATA.NUM_INPUT_FRAMES == 2 and served.cfg.DATA.TEST_SCALE == 32
    cfg = load_config(SYNTH_CFG, TINY)
    eager = Predictor(cfg, first.with_suffix(".pyth"), device="cpu", views=(2, 1))
    ours, theirs = served.predict(clip, fps=30, topk=3), eager.predict(clip, fps=30, topk=3)
    assert [t["id"] for t in ours] == [t["id"] for t in theirs]
    np.testing.assert_allclose([t["score"] for t in ours], [t["score"] for t in theirs], atol=1e-4)
    with pytest.raises(ValueError, match="logits only"):
        served.features(torch.zeros(1, 3, 2, 32, 32))
