"""examples/tadafy_finetune.py runs end to end: a folder of class sub-folders, a local 2-D weights file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tada.models import create_image_model

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tadafy_finetune.py"


def _example_module():
    spec = importlib.util.spec_from_file_location("tadafy_finetune", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_fine_tunes_on_a_folder_of_videos(tmp_path):
    from tada.data.synthetic import generate_dataset

    data = tmp_path / "synthetic"
    generate_dataset(data, videos_per_class={"train": 3, "val": 0, "test": 0}, classes=("grows", "shrinks"),
                     lengths=(16, 20), sizes=(40, 48), workers=1)
    videos = tmp_path / "my_videos"
    for name in ("grows", "shrinks"):
        (videos / name).mkdir(parents=True)
        for src in sorted((data / "videos" / "train").glob(f"{name}_*.mp4")):
            (videos / name / src.name).symlink_to(src)
    torch.manual_seed(0)
    weights = tmp_path / "resnet10_w16_in1k.pth"
    torch.save(create_image_model("resnet10_w16", num_classes=1000).state_dict(), weights)
    out = tmp_path / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = _example_module().main([
            "--videos", str(videos), "--weights", str(weights), "--out", str(out), "--backbone", "resnet10_w16",
            "DATA.NUM_INPUT_FRAMES", "4", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TRAIN_JITTER_SCALES", "[32, 40]",
            "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "2", "TEST.BATCH_SIZE", "4",
            "OPTIMIZER.MAX_EPOCH", "1", "OPTIMIZER.WARMUP_EPOCHS", "0", "DATA_LOADER.NUM_WORKERS", "0",
            "TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "1", "TEST.MULTI_VIEW_SPATIAL_CROPS", "1", "TRAIN.CHANNELS_LAST", "false",
        ])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    assert (out / "lists" / "classes.txt").read_text().split() == ["grows", "shrinks"]
    assert len((out / "lists" / "train_list.txt").read_text().splitlines()) == 4  # 3 per class, 1 held out
    results = json.loads((out / "results.json").read_text())
    assert results["num_videos"] == 2 and results["class_names"] == ["grows", "shrinks"]
    assert "ImageNet init from" in (out / "training_log.log").read_text()  # the 2-D weights were loaded
