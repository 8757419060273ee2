"""A training process for the engine tests (SIGKILL resume, torchrun), on the in-memory stand-ins.

    python tests/engine/engine_worker.py [--delay S] [--nobn] [--train-only] OUT_DIR [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_standins import NoBNNet, dataset_fn_factory, tiny_cfg  # noqa: E402

from tada.cli import run_and_exit  # noqa: E402
from tada.engine import run_pipeline  # noqa: E402
from tada.errors import TadaError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per item (to make a kill land mid-epoch)")
    parser.add_argument("--nobn", action="store_true", help="use the BN-free stand-in model")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = ["TEST.ENABLE", "false"] if args.train_only else []
    cfg = tiny_cfg(args.out, *extra, *args.opts)
    fns = {"dataset_fn": dataset_fn_factory(delay=args.delay, num_val=9, num_test=5)}
    if args.nobn:
        fns["model_fn"] = NoBNNet
    try:
        run_pipeline(cfg, **fns)
    except TadaError as exc:  # as `tada train` reports it
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    return 0


if __name__ == "__main__":
    run_and_exit(main)
