"""`tada demo` end to end on a tiny dataset and network, and its accuracy bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tada.cli import demo, main

TINY = [
    "OPTIMIZER.MAX_EPOCH", "1", "OPTIMIZER.WARMUP_EPOCHS", "0", "VIDEO.BACKBONE.DEPTH", "26",
    "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]", "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128",
    "DATA.NUM_INPUT_FRAMES", "4", "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "32",
    "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "DATA_LOADER.NUM_WORKERS", "0",
    "TEST.MULTI_VIEW_ENSEMBLE_VIEWS", "2", "TEST.MULTI_VIEW_SPATIAL_CROPS", "1",
]


def test_accuracy_groups_from_a_confusion_matrix() -> None:
    cm = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 4]])
    assert demo._accuracy_on(cm, [0, 1]) == pytest.approx(100 * 5 / 8)
    assert demo._accuracy_on(cm, [2]) == 100.0
    # inside the pair (0, 1): 5 right, 3 swapped
    assert demo._within_pair_accuracy(cm, [(0, 1)]) == pytest.approx(100 * 5 / 8)


def test_split_counts_errors_are_clear() -> None:
    assert demo._split_counts("4,2,3") == {"train": 4, "val": 2, "test": 3}
    with pytest.raises(Exception, match="TRAIN,VAL,TEST"):
        demo._split_counts("4,2")


@pytest.mark.slow
def test_demo_runs_both_models_and_reuses_finished_runs(tmp_path: Path, capsys) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "demo"
        args = ["demo", "--out", str(out), "--videos-per-class", "3,1,2", *TINY]
        assert main(args) == 0
        first = capsys.readouterr().out
        report = json.loads((out / "comparison.json").read_text())
        assert [r["name"] for r in report["runs"]] == ["TSN", "TAda2D"]
        for r in report["runs"]:
            assert 0.0 <= r["top1"] <= 100.0 and r["params"] > 0 and r["gmacs"] > 0
        assert (out / "curves.png").stat().st_size > 0 and (out / "confusion.png").stat().st_size > 0
        assert "| TSN |" in first and "| TAda2D |" in first and str(out) in first
        # the configs of the two runs differ only in the block type
        tsn = (out / "tsn" / "config.yaml").read_text()
        tada = (out / "tada2d" / "config.yaml").read_text()
        assert "Base2DBlock" in tsn and "TAda2DBlock" in tada
        for bad, message in ((tmp_path / "missing.md", "cannot read it"), (tmp_path / "plain.md", "markers")):
            if bad.name == "plain.md":
                bad.write_text("# no markers\n")
            fresh = tmp_path / "never"
            assert main(["demo", "--out", str(fresh), "--readme", str(bad), *args[3:]]) == 2
            assert message in capsys.readouterr().err and not fresh.exists()  # refused before any work
        readme = tmp_path / "README.md"
        readme.write_text("# x\n<!-- DEMO-RESULTS -->\nold\n<!-- /DEMO-RESULTS -->\n## after\n")
        assert main([*args[:3], "--readme", str(readme), *args[3:]]) == 0  # second call: nothing retrained
        assert capsys.readouterr().out.count("reusing the finished run") == 2
        text = readme.read_text()
        assert "old" not in text and "| TAda2D |" in text and text.endswith("## after\n")
        assert (tmp_path / "docs" / "demo" / "confusion.png").is_file()
    finally:
        torch.set_num_threads(threads)
