"""`tada configs`: the packaged configs, by the names ``--cfg`` accepts."""

from __future__ import annotations

import argparse

from tada.config import packaged_config_dir, packaged_config_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paths", action="store_true", help="print each config's file path too")


def run(args: argparse.Namespace) -> int:
    projects = packaged_config_dir() / "projects"
    for name in packaged_config_names():
        print(f"{name}\t{projects / name}.yaml" if args.paths else name)
    return 0
