"""The `tada` command line: one entry point, subcommands registered in COMMANDS.

Each subcommand is a module, which provides ``add_arguments(parser)`` and ``run(args) -> int``
(``args.command`` names the subcommand, for modules that serve several). The modules of this
package only parse flags and call the library (:mod:`tada.engine`, :mod:`tada.deploy`,
:mod:`tada.data`, ...); ``benchmark`` is :mod:`tada.bench`'s dispatcher, and ``extract-features``
the hook of :mod:`tada.engine.features`.
Modules are imported only when their subcommand runs, so ``tada --help`` stays fast and one
area's import errors never break another's command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import tada
from tada.errors import TadaError


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    help: str


# The registry: add a line here to plug a subcommand in.
COMMANDS: tuple[Command, ...] = (
    Command("train", "tada.cli.train", "train (then test, as the config says): the seed's runs/run.py"),
    Command("test", "tada.cli.train", "test a checkpoint: single-view and multi-view, results.json"),
    Command("predict", "tada.cli.predict", "top-5 classes by name for videos, or a timeline of windows"),
    Command("configs", "tada.cli.configs", "list the packaged configs that --cfg accepts by name"),
    Command("flops", "tada.cli.flops", "parameters and GMACs per view of a config's model"),
    Command("benchmark", "tada.bench", "speed benchmarks: model, data, export"),
    Command("demo", "tada.cli.demo", "the main job: TAda2D vs TSN on the synthetic dataset, on a CPU"),
    Command("synth", "tada.cli.synth", "generate the synthetic video dataset"),
    Command("export", "tada.cli.export", "export a model to ONNX or a torch.export program"),
    Command("extract-frames", "tada.cli.extract_frames", "decode videos once into JPEG frame folders"),
    Command("extract-features", "tada.engine.features", "backbone features of sliding windows, one .npy per video"),
)


def add_cfg_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--cfg FILE`` plus config overrides (``KEY VALUE`` pairs or ``KEY=VALUE``) after the flags."""
    parser.add_argument("--cfg", dest="cfg", required=required, metavar="FILE", help="YAML config file")
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides after the flags: KEY VALUE pairs or KEY=VALUE (values parsed as YAML)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tada",
        description="Temporally-adaptive video recognition: train, test, export TAda2D (TAdaConv).",
    )
    parser.add_argument("--version", action="version", version=f"tada {tada.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    names = {c.name: c for c in COMMANDS}
    if not argv or argv[0] not in names:
        parser.parse_args(argv or ["--help"])  # prints help or the version, or an error for an unknown command
        return 2
    command = names[argv[0]]
    module = importlib.import_module(command.module)
    sub = argparse.ArgumentParser(prog=f"tada {command.name}", description=command.help)
    sub.set_defaults(command=command.name)  # modules serving several subcommands read args.command
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except TadaError as exc:
        print(f"tada {command.name}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)  # a run stopped by a signal: 128 + its number, as the shell reports it


def _exit_code(exc: SystemExit) -> int:
    """The status ``sys.exit(value)`` gives: None is 0, an int itself, anything else printed and 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _one_of_several_workers() -> bool:
    """True in a process that torchrun (or `tada train` with NUM_GPUS > 1) started as one of several."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def run_and_exit(program: Callable[[], int | None]) -> NoReturn:
    """Run ``program`` and exit with its status: the end of every `tada` process and of user scripts.

    A worker of a multi-process run exits without interpreter finalization. torch keeps the process
    group of a DistributedDataParallel model alive after ``destroy_process_group``, so its gloo
    threads outlive the program; one that releases the last tensor of a collective while Python
    finalizes aborts the process ("terminate called without an active exception", SIGABRT), and
    torchrun then reports a run that finished as failed. Output and log files are flushed first.
    """
    if not _one_of_several_workers():
        raise SystemExit(program())
    try:
        code = int(program() or 0)
    except SystemExit as exc:  # argparse errors and --help
        code = _exit_code(exc)
    except KeyboardInterrupt:
        code = 130
    except Exception:  # the traceback Python would print, then the same status
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry_point(argv: Sequence[str] | None = None) -> NoReturn:
    """The `tada` program: :func:`main`, then :func:`run_and_exit`'s exit."""
    run_and_exit(lambda: main(argv))
