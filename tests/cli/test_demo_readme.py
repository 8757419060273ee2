"""The demo's README section for several seeds, its seeds table and the demo's own options."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tada.cli import demo
from tada.cli.demo_readme import FIGURES, README_END, README_START, seeds_table, write_readme_section
from tada.config import load_config


def _report(seed: int, out: Path, *, tsn: float, tada: float, nonfinite: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        (out / name).write_bytes(f"{name} of seed {seed}".encode())
    run = dict(within_pair=50.0, nonfinite=0, train_seconds=100.0)
    return {
        "seed": seed, "out": str(out), "gap_top1": tada - tsn, "protocol": "2x3", "table": f"| table of seed {seed} |",
        "runs": [dict(run, name="TSN", top1=tsn), dict(run, name="TAda2D", top1=tada, nonfinite=nonfinite,
                                                       train_seconds=120.0)],
        "dataset": {"seconds": 12.0, "manifest": {"classes": ["a"] * 7,
                                                  "counts": {"train": 420, "val": 140, "test": 210}}},
        "reused_runs": [], "concurrent": True, "demo_seconds": 200.0 + seed,
        "calibration": {"label": "grows", "block": "backbone.layer.b_rf", "channels": [1, 2, 3],
                        "tada2d": {"video": {"class": "grows", "prob": 0.99},
                                   "reversed": {"class": "shrinks", "prob": 0.97}},
                        "tsn": {"video": {"class": "grows", "prob": 0.55},
                                "reversed": {"class": "grows", "prob": 0.55}}},
    }


def test_seeds_table_has_one_row_per_seed(tmp_path: Path) -> None:
    reports = [_report(0, tmp_path / "0", tsn=60.0, tada=100.0), _report(1, tmp_path / "1", tsn=61.5, tada=90.0,
                                                                          nonfinite=2)]
    rows = seeds_table(reports).splitlines()
    assert len(rows) == 4
    assert rows[2] == "| 0 | 60.0 | 100.0 | +40.0 | 0 / 0 | 100 s / 120 s |"
    assert rows[3] == "| 1 | 61.5 | 90.0 | +28.5 | 0 / 2 | 100 s / 120 s |"


def test_readme_section_shows_every_seed_and_the_first_seeds_figures(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_START}\nold\n{README_END}\n## after\n")
    reports = [_report(0, tmp_path / "s0", tsn=60.0, tada=100.0), _report(1, tmp_path / "s1", tsn=61.5, tada=90.0),
               _report(2, tmp_path / "s2", tsn=64.0, tada=95.0)]
    write_readme_section(readme, reports, total_seconds=600.0, command="tada demo --seeds 0 1 2 --readme README.md")
    text = readme.read_text()
    assert text.startswith(f"# x\n{README_START}\n") and text.endswith(f"{README_END}\n## after\n")
    assert "old" not in text and "| table of seed 0 |" in text and "| table of seed 1 |" not in text
    assert "| 2 | 64.0 | 95.0 | +31.0 |" in text and "from +28.5 to +40.0 points" in text
    assert "3.3 minutes for seed 0 (10.0 minutes for all 3 seeds)" in text and "with 2x3 views" in text
    assert "*grows*" in text and "`backbone.layer.b_rf`" in text
    assert "and so is the prediction (video: grows 99%, reversed: shrinks 97%)" in text
    assert "docs/demo/calibration.png" in text and "`tada demo --seeds 0 1 2 --readme README.md`" in text
    for name in FIGURES:
        assert (tmp_path / "docs" / "demo" / name).read_bytes() == f"{name} of seed 0".encode()


def test_one_seed_has_no_seeds_table_and_a_same_prediction_is_said(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}{README_END}")
    report = _report(0, tmp_path / "s0", tsn=60.0, tada=100.0)
    report["calibration"]["tada2d"]["reversed"] = {"class": "grows", "prob": 0.6}
    report["reused_runs"] = ["TSN"]
    write_readme_section(readme, [report], total_seconds=1.0, command="tada demo --readme README.md")
    text = readme.read_text()
    assert "| seed |" not in text and "both clips still get the same class" in text
    assert "reused the finished runs TSN (seed 0)" in text


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_seed_options() -> None:
    assert demo._seeds(_args()) == [0]
    assert demo._seeds(_args("--seed", "3")) == [3]
    assert demo._seeds(_args("--seeds", "0", "1", "2")) == [0, 1, 2]
    assert demo._command(_args("--seeds", "0", "1", "2")) == "tada demo --seeds 0 1 2 --readme README.md"
    assert demo._command(_args()) == "tada demo --readme README.md"
    with pytest.raises(Exception, match="each seed once"):
        demo._seeds(_args("--seeds", "1", "1"))
    with pytest.raises(SystemExit):
        _args("--seed", "1", "--seeds", "2")
    with pytest.raises(Exception, match="threads-per-run"):
        demo.run(_args("--threads-per-run", "0"))


def test_the_demo_tests_only_with_the_multi_view_protocol() -> None:
    cfg = load_config(demo.CONFIG_DIR / "tada2d.yaml")
    assert demo._multi_view_only(cfg) == ["TEST.NUM_ENSEMBLE_VIEWS", "2", "TEST.NUM_SPATIAL_CROPS", "3"]
    assert demo._multi_view_only(cfg.with_overrides({"TEST.AUTOMATIC_MULTI_SCALE_TEST": False})) == []


@pytest.mark.slow
def test_demo_with_two_seeds_trains_concurrently_and_writes_the_readme(tmp_path: Path, capsys) -> None:
    from test_demo import TINY

    from tada.cli import main

    out = tmp_path / "demo"
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_START}\nold\n{README_END}\n")
    argv = ["demo", "--out", str(out), "--seeds", "0", "1", "--concurrent", "--videos-per-class", "3,1,2",
            "--readme", str(readme), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[TSN] " in printed and "[TAda2D] " in printed  # the children's lines, prefixed
    for seed in (0, 1):
        folder = out / f"seed_{seed}"
        report = json.loads((folder / "comparison.json").read_text())
        assert report["seed"] == seed and report["concurrent"] and report["protocol"] == "2x1"
        assert report["calibration"]["block"].endswith("b_rf")
        assert (folder / "calibration.png").read_bytes()[:4] == b"\x89PNG"
        for run in ("tsn", "tada2d"):
            assert (folder / run / "console.log").is_file()
            assert (folder / run / "test_2x1").is_dir() and not (folder / run / "test_1x1").exists()
            assert "NUM_WORKERS: 0" in (folder / run / "config.yaml").read_text()
    seeds = json.loads((out / "seeds.json").read_text())
    assert [r["seed"] for r in seeds["seeds"]] == [0, 1]
    text = readme.read_text()
    assert "| 0 |" in text and "| 1 |" in text and "docs/demo/calibration.png" in text
    assert (tmp_path / "docs" / "demo" / "calibration.png").read_bytes() == (out / "seed_0" / "calibration.png"
                                                                             ).read_bytes()
