"""`tada extract-frames`: decode videos once into JPEG frame folders (:mod:`tada.data.extract`)."""

from __future__ import annotations

import argparse
import os

from tada.data.extract import (
    VIDEO_EXTENSIONS,
    ExtractSettings,
    extract_jobs,
    find_videos,
    read_video_list,
    videos_from_config,
)
from tada.errors import TadaError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Decode videos once into JPEG frame folders (img_00001.jpg ..., MMAction2 layout) for "
        "DATA.FORMAT frames. Resumable: re-running skips finished folders. Either --cfg (the "
        "config's splits, written to DATA.FRAMES_DIR) or --root/--out (with --videos LIST, or every "
        "video under --root)."
    )
    parser.add_argument("--cfg", metavar="FILE", help="config whose dataset splits to extract")
    parser.add_argument("--splits", default="train,val,test",
                        help="with --cfg: comma-separated splits (default train,val,test)")
    parser.add_argument("--videos", metavar="LIST", help="text file: 'relpath' or 'relpath label' per line")
    parser.add_argument("--root", metavar="DIR", help="video root the relpaths are relative to")
    parser.add_argument("--out", metavar="DIR", help="output root (default with --cfg: DATA.FRAMES_DIR)")
    parser.add_argument("--name", help="list file name stem (default: the split, the LIST stem, or 'videos')")
    parser.add_argument("--short-side", type=int, default=0,
                        help="resize so the short side is this many pixels (0 = keep; default 0)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    parser.add_argument("--step", type=int, default=1, help="keep every k-th frame (default 1 = all)")
    parser.add_argument("--subsampling", default="420", choices=("420", "422", "444"),
                        help="JPEG chroma subsampling (default 420, as H.264 stores colour; 444 is "
                        "closer to the decoded video but ~1.7x larger and slower to decode)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all CPU cores)")
    parser.add_argument("--overwrite", action="store_true", help="re-extract finished folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="with --cfg: config overrides (KEY VALUE pairs or KEY=VALUE)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = ExtractSettings(short_side=args.short_side, quality=args.quality, step=args.step,
                                   subsampling=args.subsampling)
    except ValueError as exc:
        raise TadaError(str(exc)) from None
    jobs: list[tuple[str, list[tuple[str, int]], str, str]] = []  # (name, videos, root, out)
    if args.cfg:
        if args.videos:
            raise TadaError("give either --cfg or --videos, not both")
        from tada.config import load_config
        from tada.data.frames import frames_dir_from_config

        cfg = load_config(args.cfg, overrides=args.opts or [])
        if args.root:
            raise TadaError("with --cfg the videos are under DATA.DATA_ROOT_DIR; override it (DATA.DATA_ROOT_DIR DIR) "
                            "instead of --root")
        root = cfg.DATA.DATA_ROOT_DIR
        if not root:
            raise TadaError(f"{args.cfg}: DATA.DATA_ROOT_DIR is empty; set it in the config or as an override")
        try:
            settings = ExtractSettings(short_side=args.short_side, quality=args.quality, step=args.step,
                                       subsampling=args.subsampling, template=cfg.DATA.FRAME_TEMPLATE)
        except ValueError as exc:
            raise TadaError(f"{args.cfg}: {exc}") from None
        out = args.out or frames_dir_from_config(cfg)
        for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
            jobs.append((args.name or split, videos_from_config(cfg, split), root, out))
    else:
        if args.opts:
            raise TadaError(f"config overrides {args.opts} need --cfg")
        if not args.root or not args.out:
            raise TadaError("without --cfg, give --root DIR and --out DIR (and optionally --videos LIST)")
        if not os.path.isdir(args.root):
            raise TadaError(f"--root {args.root}: not a directory")
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise TadaError(f"--out {args.out}: exists and is not a directory")
        if args.videos:
            videos = read_video_list(args.videos)
            name = args.name or os.path.splitext(os.path.basename(args.videos))[0]
        else:
            videos = find_videos(args.root)
            if not videos:
                raise TadaError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {args.root}")
            name = args.name or "videos"
        jobs.append((name, videos, args.root, args.out))
    reports = extract_jobs(jobs, settings=settings, workers=args.workers, progress=not args.no_progress,
                           on_report=lambda report: print(report.summary()))
    return 1 if any(report.failed_path for report in reports) else 0
