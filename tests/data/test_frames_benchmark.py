"""benchmarks/gpu_frames.py runs on a CPU machine, as a script: the GPU parts say they are skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_frames.py"


@pytest.mark.slow
def test_gpu_frames_benchmark_on_cpu(tmp_path: Path) -> None:
    args = ["--videos", "2", "--clip-seconds", "1", "--repeats", "8", "--workers", "1", "--prep-workers", "1", "--batch", "2",
            "--seconds", "0.2", "--items", "2", "--steps", "2", "--root", str(tmp_path)]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "| video, CPU decode+transform |" in out and "frames / video (CPU time)" in out
    assert "| simplejpeg (libjpeg-turbo) |" in out and "JPEG frames" in out
    assert "| frames, CPU JPEG decode+transform |" in out
    if not torch.cuda.is_available():
        assert "skipped: needs CUDA and torchvision" in out and "TAda2D-R50 rows skipped: no CUDA device" in out
