"""`tada synth --out DIR [--preset NAME]`: generate the synthetic video dataset (:mod:`tada.data.synthetic`)."""

from __future__ import annotations

import argparse
import time

from tada.data.synthetic import CLASSES, PRESETS, SPLITS, ensure_dataset, generate_dataset

__all__ = ["add_arguments", "run"]


def _counts_arg(text: str) -> dict[str, int]:
    parts = [int(x) for x in text.split(",")]
    if len(parts) == 1:
        n = parts[0]
        parts = [n, max(n // 3, 1), max(n // 2, 1)]
    if len(parts) != 3 or min(parts) < 0:
        raise argparse.ArgumentTypeError("give TRAIN or TRAIN,VAL,TEST video counts per class, e.g. 60,20,30")
    return dict(zip(SPLITS, parts))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo",
                        help="the task: its classes, video lengths, sizes and split sizes (default demo; "
                             "reversal6 = three time-reversal pairs, the training-fidelity task)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--videos-per-class", type=_counts_arg, default=None, metavar="TRAIN[,VAL,TEST]",
                        help="videos per class and split (default: the preset's, demo 60,20,30; one number N "
                             "means N,N/3,N/2)")
    parser.add_argument("--classes", default=None,
                        help=f"comma-separated class names (default: the preset's) from: {', '.join(CLASSES)}")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel encoder processes (default: CPU count, at most 4)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the folder is up to date")


def run(args: argparse.Namespace) -> int:
    kwargs = PRESETS[args.preset].generator_kwargs()
    if args.videos_per_class is not None:
        kwargs["videos_per_class"] = args.videos_per_class
    if args.classes is not None:
        kwargs["classes"] = tuple(c.strip() for c in args.classes.split(",") if c.strip())
    kwargs.update(seed=args.seed, workers=args.workers)
    started = time.perf_counter()
    manifest = generate_dataset(args.out, **kwargs) if args.force else ensure_dataset(args.out, **kwargs)
    took = time.perf_counter() - started
    reused = " (reused)" if took < 0.5 * manifest.get("seconds", 0) else ""
    print(f"synthetic dataset in {args.out}{reused}: {len(manifest['classes'])} classes, videos "
          f"{manifest['counts']}, time-reversal pairs {manifest['pairs']}, appearance-only "
          f"{manifest['appearance_classes']}; generated in {manifest['seconds']:.1f} s")
    return 0
