"""`tada flops --cfg FILE [KEY VALUE ...]`: parameters and GMACs per view of a config's model."""

from __future__ import annotations

import argparse
import json

from tada.cli import add_cfg_arguments
from tada.config import load_config
from tada.models.flops import count_model

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_cfg_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.cfg, overrides=list(args.opts or []))
    stats = count_model(cfg)
    if args.json:
        print(json.dumps({"cfg": str(args.cfg), **stats}))
        return 0
    frames = stats["frames"]
    print(f"config: {args.cfg}")
    print(f"params: {stats['params']:,} ({stats['params'] / 1e6:.2f} M)")
    for split in ("train", "test"):
        size = stats[f"{split}_crop"]
        print(f"{split:>5} view {frames}x{size}x{size}: {stats[f'gmacs_{split}_view']:.2f} GMACs")
    return 0
