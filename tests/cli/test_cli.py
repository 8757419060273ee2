"""The command line: help texts, `python -m tada`, the seed's runs/run.py, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tada.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_top_level_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command.name in out


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_subcommand_explains_itself(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert f"tada {name}" in capsys.readouterr().out


def test_version_is_the_package_version(capsys) -> None:
    import importlib.metadata

    import tada

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"tada {tada.__version__}"
    assert importlib.metadata.version("tada") == tada.__version__  # single-sourced in pyproject


def test_python_dash_m_is_the_same_command() -> None:
    out = run_cli("-m", "tada", "--help")
    assert out.returncode == 0 and "train" in out.stdout and "demo" in out.stdout


def test_unknown_command_fails() -> None:
    out = run_cli("-m", "tada", "trian")
    assert out.returncode != 0 and "invalid choice" in out.stderr


def test_seed_command_without_data_names_the_key_to_set(tmp_path: Path) -> None:
    out = run_cli(str(REPO / "runs" / "run.py"), "--cfg", str(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml"),
                  "OUTPUT_DIR", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode != 0
    assert "DATA.DATA_ROOT_DIR" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_bad_override_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    out = run_cli(str(REPO / "runs" / "run.py"), "--cfg", str(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml"),
                  "TRAIN.BATCH_SIZ", "4", cwd=tmp_path)
    assert out.returncode != 0
    assert "TRAIN.BATCH_SIZE" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("extra, message", [
    (["VIDEO.BACKBONE.DEPTH", "34"], "VIDEO.BACKBONE.DEPTH must be one of"),
    (["VIDEO.HEAD.NAME", "MViTHead"], "VIDEO.HEAD.NAME='MViTHead'"),
    (["VIDEO.BACKBONE.NUM_FILTERS", "[8, 18, 32, 64, 2048]"], "cannot be built"),
])
def test_model_settings_errors_are_clear_errors(extra: list[str], message: str, capsys) -> None:
    code = main(["flops", "--cfg", str(REPO / "configs/projects/tada/k400/tada2d_8x8.yaml"), *extra])
    assert code == 2 and message in capsys.readouterr().err


def test_a_directory_as_config_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["flops", "--cfg", str(tmp_path)]) == 2
    assert "cannot read config file" in capsys.readouterr().err


_FINALIZE_PROBE = """
import atexit, sys
import tada.cli as cli
atexit.register(print, "python finalized")
if sys.argv[1] == "raise":
    def boom(argv=None):
        raise ZeroDivisionError("boom")
    cli.main = boom
cli.entry_point(sys.argv[2:])
"""


@pytest.mark.parametrize("worker", [False, True])
def test_entry_point_exit_status_and_finalization(worker: bool) -> None:
    """A worker of a multi-process run skips interpreter finalization (gloo threads of a DDP process group
    outlive it and abort the process there) but keeps the status and flushed output of a normal exit."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "WORLD_SIZE")}
    if worker:
        env.update(LOCAL_RANK="1", WORLD_SIZE="2")

    def probe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _FINALIZE_PROBE, *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)

    finalized = "python finalized" in probe("ok", "synth", "--help").stdout
    assert finalized is not worker
    ok = probe("ok", "synth", "--help")
    assert ok.returncode == 0 and "tada synth" in ok.stdout
    bad_arg = probe("ok", "synth", "--no-such-flag")
    assert bad_arg.returncode == 2 and "tada synth: error:" in bad_arg.stderr
    unknown = probe("ok", "no-such-command")
    assert unknown.returncode == 2
    crashed = probe("raise")
    assert crashed.returncode == 1 and "ZeroDivisionError: boom" in crashed.stderr
