"""`tada benchmark data` and `python -m tada.bench.gpu_frames` on a CPU machine (GPU parts say they are skipped)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

DATA_TESTS = Path(__file__).resolve().parents[1] / "data"  # its test_frames.py makes the test videos


@pytest.mark.slow
def test_gpu_frames_benchmark_on_cpu(tmp_path: Path) -> None:
    args = ["--videos", "2", "--clip-seconds", "1", "--repeats", "8", "--workers", "1", "--prep-workers", "1",
            "--batch", "2",
            "--seconds", "0.2", "--items", "2", "--steps", "2", "--root", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "tada.bench.gpu_frames", *args], capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "| video, CPU decode+transform |" in out and "frames / video (CPU time)" in out
    assert "| simplejpeg (libjpeg-turbo) |" in out and "JPEG frames" in out
    assert "| frames, CPU JPEG decode+transform |" in out
    if not torch.cuda.is_available():
        assert "skipped: needs CUDA and torchvision" in out and "TAda2D-R50 rows skipped: no CUDA device" in out


def test_data_benchmark_frame_rows(tmp_path: Path) -> None:
    """`tada benchmark data` times the frame-folder item against the video item of the same clip."""
    import importlib.util

    from tada.bench.data import _frame_rows, format_table

    spec = importlib.util.spec_from_file_location("_tada_test_frames", DATA_TESTS / "test_frames.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    files = {"k400": [helpers.make_video(tmp_path / "k.mp4", frames=80, fps=30)],
             "ssv2": [helpers.make_video(tmp_path / "s.mp4", frames=30, fps=12, seed=1)]}
    result = _frame_rows(files, tmp_path, iters=2)
    assert [r["name"] for r in result["rows"]] == ["k400 train item", "ssv2 train item"]
    for r in result["rows"]:
        assert r["video_cpu_ms"] > 0 and r["frames_cpu_ms"] > 0 and r["ratio"] == r["frames_cpu_ms"] / r["video_cpu_ms"]
        assert r["jpeg_bytes_cpu_ms"] > 0
    assert (tmp_path / "frames" / "k" / "meta.json").is_file() and result["frames_mb"]["k400"] > 0
    table = format_table({"rows": [], "source_mb": {"k400": 0.1}, "iters": 2,
                          "loader_clips_per_s": {}, "frames": result})
    assert "| k400 train item |" in table and "frame folder {'k400'" in table
    assert "goal" not in table  # the benchmark reports ratios; docs/benchmarks.md states the goals


def test_the_gpu_route_worker_item_only_reads_jpeg_files(tmp_path: Path) -> None:
    """What the benchmark's "JPEG bytes" row times: the item ships the files' bytes, decoding none."""
    import dataclasses
    import importlib.util
    from unittest import mock

    from tada.bench.data import _spec
    from tada.data.annotations import VideoEntry
    from tada.data.datasets import VideoDataset
    from tada.data.extract import ExtractSettings, extract_video
    from tada.data.frames import open_frames

    spec = importlib.util.spec_from_file_location("_tada_test_frames", DATA_TESTS / "test_frames.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    video = helpers.make_video(tmp_path / "k.mp4", frames=80, fps=30)
    folder = tmp_path / "frames" / "k"
    assert extract_video(video, folder, settings=ExtractSettings(quality=90))[0] != "failed"
    gpu_spec = dataclasses.replace(_spec("k400"), gpu_resize=True, gpu_decode=True)
    dataset = VideoDataset([VideoEntry(str(video), 0)], split="train", spec=gpu_spec,
                           open_reader=lambda path: open_frames(folder), name="k400")
    with mock.patch("simplejpeg.decode_jpeg", side_effect=AssertionError("a JPEG was decoded")) as decode:
        torch.manual_seed(0)
        item = dataset[0]
    assert decode.call_count == 0 and not item["failed"]
    frames = {p.read_bytes() for p in folder.glob("*.jpg")}
    assert len(item["jpegs"]) == 8 and all(j in frames for j in item["jpegs"])
    # the frames route's item decodes the same files on the CPU, through the patched function
    import simplejpeg

    cpu_dataset = VideoDataset([VideoEntry(str(video), 0)], split="train", spec=_spec("k400"),
                               open_reader=lambda path: open_frames(folder), name="k400")
    with mock.patch("simplejpeg.decode_jpeg", wraps=simplejpeg.decode_jpeg) as decode:
        torch.manual_seed(0)
        assert not cpu_dataset[0]["failed"]
    assert decode.call_count == 8
