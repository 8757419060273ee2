"""The config route of tadafy: VIDEO.TADAFY.* builds the model; train / test / export / flops / predict run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tada import cli
from tada.checkpoint import CheckpointError, load_in1k
from tada.config import ConfigError, load_config
from tada.models import TAdaVideoModel, build_model, create_image_model
from tada.models.tadafy import TAdaConvBlock

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "projects" / "tada" / "synthetic" / "tadafy_resnet10.yaml"
BASELINE = REPO / "configs" / "projects" / "tada" / "synthetic" / "frames_resnet10.yaml"
TINY = [
    "NUM_GPUS", "0", "DATA.NUM_INPUT_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
    "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "4", "TEST.BATCH_SIZE", "8",
    "OPTIMIZER.MAX_EPOCH", "1", "OPTIMIZER.WARMUP_EPOCHS", "0", "DATA_LOADER.NUM_WORKERS", "0", "LOG_PERIOD", "1",
    "TRAIN.CHANNELS_LAST", "false", "TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "1", "TEST.MULTI_VIEW_SPATIAL_CROPS", "1",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_config_keys_reach_tadafy():
    cfg = load_config(CONFIG, overrides=[
        "VIDEO.TADAFY.ROUTE_FUNC_R", "8", "VIDEO.TADAFY.ROUTE_FUNC_K", "[5, 1]", "VIDEO.TADAFY.POOL_K", "5",
        "VIDEO.TADAFY.EXCLUDE", "['layer4.*']", "VIDEO.TADAFY.CAL_DIM", "cout", "BN.EPS", "1e-3",
        "VIDEO.HEAD.DROPOUT_RATE", "0.3", "DATA.NUM_INPUT_FRAMES", "6",
    ])
    with torch.device("meta"):
        model = build_model(cfg)
    assert isinstance(model, TAdaVideoModel) and model.num_frames == 6 and model.channels_last
    assert model.converted == ("layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2",
                               "layer3.0.conv1", "layer3.0.conv2")
    block = model.net.layer2[0].conv2
    assert block.rf.a.out_channels == 32 // 8 and block.rf.a.kernel_size == 5 and block.rf.b.kernel_size == 1
    assert block.pool.kernel_size == 5 and block.conv.cal_dim == "cout" and block.pool_bn.eps == 1e-3
    assert model.net.dropout.p == 0.3 and model.get_classifier().out_features == 7
    with torch.device("meta"):
        baseline = build_model(load_config(BASELINE))
    assert baseline.converted == () and not any(isinstance(m, TAdaConvBlock) for m in baseline.modules())


def test_config_errors_name_the_keys():
    with pytest.raises(ConfigError, match="VIDEO.BACKBONE.NUM_FILTERS"):
        build_model(load_config(CONFIG, overrides=["VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]"]))
    with pytest.raises(ConfigError, match="unknown image model 'resnet7'"):
        build_model(load_config(CONFIG, overrides=["VIDEO.TADAFY.BACKBONE", "resnet7"]))
    with pytest.raises(ConfigError, match="VIDEO.TADAFY.CONVS set, but VIDEO.TADAFY.BACKBONE is empty"):
        build_model(load_config(CONFIG, overrides=["VIDEO.TADAFY.BACKBONE", "''", "VIDEO.TADAFY.CONVS", "all"]))
    with pytest.raises(ConfigError, match="must be one of"):
        load_config(CONFIG, overrides=["VIDEO.TADAFY.CONVS", "some"])
    if importlib_missing("timm"):
        with pytest.raises(ConfigError, match="needs timm"):
            build_model(load_config(CONFIG, overrides=["VIDEO.TADAFY.BACKBONE", "timm:resnet50"]))


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


def test_image_weights_from_a_local_file(tmp_path):
    """TRAIN.INIT in1k with TRAIN.IN1K_WEIGHTS: the 2-D backbone's own state dict (ImageNet head dropped)."""
    torch.manual_seed(3)
    image = create_image_model("resnet10_w16", num_classes=1000)
    path = tmp_path / "resnet10_w16_in1k.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in image.state_dict().items()}}, path)
    model = build_model(load_config(CONFIG, overrides=TINY))
    report = load_in1k(model, path)
    assert report.dropped == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.net.layer3[0].conv2.conv.weight_2d, image.layer3[0].conv2.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.net.conv1.weight, image.conv1.weight, rtol=0, atol=0)
    torch.save(create_image_model("resnet18").state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="do not fit the tadafied network"):
        load_in1k(model, tmp_path / "other.pth")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from tada.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    manifest = generate_dataset(root, videos_per_class={"train": 1, "val": 1, "test": 1}, lengths=(16, 20),
                                sizes=(40, 48), workers=1)
    return root, manifest


def test_train_test_export_flops_predict(synthetic, tmp_path, capsys):
    pytest.importorskip("onnx", reason="pip install 'tada[export]'")
    pytest.importorskip("onnxruntime", reason="pip install 'tada[export]'")
    root, manifest = synthetic
    opts = [*TINY, "DATA.DATA_ROOT_DIR", str(root), "DATA.ANNO_DIR", str(root), "OUTPUT_DIR", str(tmp_path / "run")]
    assert cli.main(["train", "--cfg", str(CONFIG), *opts]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["num_videos"] == 7 and results["failed_videos"] == []
    assert cli.main(["test", "--cfg", str(CONFIG), *opts, "TEST.AUTOMATIC_MULTI_SCALE_TEST", "false"]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint_epoch_00001.pyth"
    assert ckpt.is_file()

    out = tmp_path / "tadafy.onnx"
    capsys.readouterr()
    assert cli.main(["export", "--cfg", str(CONFIG), "--checkpoint", str(ckpt), "--output", str(out),
                     "--exporter", "torchscript", "--opset", "17", *opts]) == 0
    assert "verified" in capsys.readouterr().out
    assert json.loads(Path(f"{out}.json").read_text())["num_frames"] == 4

    assert cli.main(["flops", "--cfg", str(CONFIG), "--json", *opts]) == 0
    flops = json.loads(capsys.readouterr().out)
    assert flops["params"] == sum(p.numel() for p in build_model(load_config(CONFIG, overrides=opts)).parameters())
    assert flops["gmacs"] > 0

    video = str(root / "videos" / "test" / "grows_0000.mp4")
    assert cli.main(["predict", video, "--checkpoint", str(ckpt), "--views", "1x1", "--device", "cpu", "--json",
                     "--cfg", str(CONFIG), *opts]) == 0
    top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top"]
    assert len(top) == 5 and {t["label"] for t in top} <= set(manifest["classes"])
