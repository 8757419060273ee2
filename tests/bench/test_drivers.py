"""The GPU benchmark modules and the shell drivers in benchmarks/ that run them.

The GPU figures come from a CUDA machine (benchmarks/gpu_check.sh); here each module runs in its
CPU mode, or stops with its reason, and every module a driver names exists.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "benchmarks").glob("*.sh")))
def test_every_module_a_shell_driver_runs_exists(script: str) -> None:
    text = (REPO / "benchmarks" / script).read_text()
    modules = re.findall(r"python3? -m (tada[\w.]*)", text)
    assert modules, f"{script} runs no tada module"
    for module in modules:
        assert importlib.util.find_spec(module) is not None, f"{script}: no module {module}"
    assert "benchmarks/" not in re.sub(r"#.*", "", text), f"{script} runs a script by path"


def test_benchmarks_folder_holds_only_shell_drivers() -> None:
    assert sorted(p.suffix for p in (REPO / "benchmarks").iterdir() if p.is_file()) == [".sh", ".sh"]


def test_python_dash_m_tada_bench_is_tada_benchmark() -> None:
    out = run_module("tada.bench", "model", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: tada benchmark model")


def test_gpu_model_check_passes_in_its_cpu_mode() -> None:
    out = run_module("tada.bench.gpu_model_check", "--device", "cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all model checks passed" in out.stdout and "FAIL" not in out.stdout
    assert out.stdout.count("ok  ") >= 10


def test_gpu_profile_blocks_run_in_its_cpu_mode() -> None:
    out = run_module("tada.bench.gpu_profile", "--device", "cpu", "--parts", "blocks", "--size", "32", "--batch", "1",
                     "--iters", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "eager ms" in line]
    assert len(rows) == 4 and "FAILED" not in out.stdout  # one bottleneck per stage


def test_gpu_train_smoke_run_reports_its_figures(tmp_path) -> None:
    summary = tmp_path / "summary.json"
    out = run_module("tada.bench.gpu_train", "--smoke", "--out", str(tmp_path / "work"), "--summary", str(summary),
                     timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = json.loads(summary.read_text())
    assert row["route"] == "video" and row["clips_per_s"] > 0 and 0 <= row["data_wait_fraction"] <= 1
    assert "clips/s through the loader" in out.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_data_says_it_needs_cuda() -> None:
    out = run_module("tada.bench.gpu_data", "--steps", "1")
    assert out.returncode == 2 and "needs CUDA" in out.stderr


def test_tadafy_trains_both_packaged_configs_per_seed_and_reports_the_gap(tmp_path, monkeypatch, capsys) -> None:
    """The driver's own work (commands, gap, summary); the trainings are the engine's, tested there."""
    from tada import cli
    from tada.bench import tadafy

    calls = []

    def fake_main(argv):
        calls.append(argv)
        cfg, out = Path(argv[argv.index("--cfg") + 1]), Path(argv[argv.index("OUTPUT_DIR") + 1])
        assert cfg.is_file(), cfg
        out.mkdir(parents=True)
        top1 = 80.0 if "tadafy" in cfg.name else 60.0
        (out / "results.json").write_text(json.dumps({"top1": top1 + int(argv[argv.index("RANDOM_SEED") + 1])}))
        return 0

    monkeypatch.setattr(cli, "main", fake_main)
    assert tadafy.main(["--seeds", "0,1", "--out", str(tmp_path), "--data", "DATA", "SOLVER.MAX_EPOCH", "1"]) == 0
    assert [Path(c[c.index("--cfg") + 1]).name for c in calls] == ["tadafy_resnet10.yaml", "frames_resnet10.yaml"] * 2
    assert all(c[0] == "train" and c[-2:] == ["SOLVER.MAX_EPOCH", "1"] for c in calls)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["seed"] for row in summary] == [0, 1]
    assert [row["gap"] for row in summary] == [20.0, 20.0]
    assert "| 1 | 81.0 | 61.0 | +20.0 |" in capsys.readouterr().out
