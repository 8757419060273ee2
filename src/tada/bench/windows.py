"""`tada benchmark windows`: a long video's timeline against the model alone, and its peak memory.

For each video duration asked, a fresh process loads the config's model (random weights: speed
and memory do not depend on them), scores every window of a generated video of that length
(:meth:`tada.Predictor.timeline`: streamed decode, crops, batched model calls) and reports:

- windows/s of the whole timeline, and clips/s of the model alone on ready-made clips of the same
  batch size, measured right after in the same process; their ratio is what decoding and
  cropping cost (1.0: none);
- the process's peak resident memory (``ru_maxrss``) and its resident memory once the model is
  loaded, so what the stream adds is visible, and how either changes with the video's length.

Videos are generated once into ``--workdir`` (x264, moving content at ``--size`` and 30 fps).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "generate_video", "run"]

DEFAULT_CFG = "configs/projects/tada/k400/tada2d_8x8.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", default=DEFAULT_CFG, help=f"config of the model and clip (default {DEFAULT_CFG})")
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0],
                        help="video durations to measure, one process each (default 60)")
    parser.add_argument("--size", default="340x256", help="video width x height (default 340x256)")
    parser.add_argument("--batch", type=int, default=4, help="clips per model call (default 4)")
    parser.add_argument("--stride", type=float, default=None, help="window stride in seconds (default: the window)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=1, help="crops per window (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--workdir", default=".cache/bench_windows", help="where generated videos are kept")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides (e.g. a smaller model), after a flag that takes one value")


def generate_video(path: Path, *, seconds: float, width: int, height: int, fps: int = 30) -> Path:
    """Moving content (a scrolling gradient and a bouncing square), x264, written once and reused."""
    import av

    if path.is_file():
        return path
    tmp = path.with_name(path.name + ".part.mp4")
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "250"}
        for i in range(int(round(seconds * fps))):
            img = np.empty((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            img[..., 2] = (i * 5) % 256
            x = (7 * i) % max(1, width - 40)
            y = (5 * i) % max(1, height - 40)
            img[y:y + 40, x:x + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def _rss_bytes() -> int:
    """The process's resident memory now (Linux /proc), 0 where unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _measure(cfg_path: str, opts: list[str], video: str, batch: int, stride: float | None, crops: int,
             threads: int, queue: Any) -> None:
    """In a fresh process: the timeline's windows/s and peak RSS, then the model alone."""
    import torch

    from tada.config import load_config
    from tada.deploy.predictor import Predictor
    from tada.models import build_model

    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(cfg_path, ["NUM_GPUS", "0", *opts])
    torch.manual_seed(0)
    predictor = Predictor(cfg, model=build_model(cfg), device="cpu", batch_size=batch * crops)
    loaded = _rss_bytes()
    start = time.perf_counter()
    timeline = predictor.timeline(video, stride=stride, crops=crops)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    windows = len(timeline["windows"])
    d = cfg.DATA
    clips = torch.randn(batch * crops, 3, d.NUM_INPUT_FRAMES, d.TEST_CROP_SIZE, d.TEST_CROP_SIZE)
    predictor.logits(clips)  # warm-up
    calls = max(2, min(windows // batch, 8))
    start = time.perf_counter()
    for _ in range(calls):
        predictor.logits(clips)
    model_seconds = (time.perf_counter() - start) / (calls * batch)
    queue.put({"windows": windows, "failed": sum("error" in w for w in timeline["windows"]),
               "timeline_s": elapsed, "windows_per_s": windows / elapsed, "model_clips_per_s": 1 / model_seconds,
               "rss_loaded_bytes": loaded, "peak_rss_bytes": peak, "threads": torch.get_num_threads(),
               "window_seconds": timeline["window_seconds"], "stride": timeline["stride"]})


def run(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for seconds in args.seconds:
        video = generate_video(workdir / f"moving_{width}x{height}_{seconds:g}s.mp4", seconds=seconds,
                               width=width, height=height)
        queue = ctx.Queue()
        child = ctx.Process(target=_measure, args=(args.cfg, list(args.opts), str(video), args.batch, args.stride,
                                                   args.crops, args.threads, queue))
        child.start()
        result = queue.get()
        child.join()
        result.update(video_seconds=seconds, size=f"{width}x{height}", crops=args.crops, batch=args.batch)
        result["ratio"] = result["windows_per_s"] * args.crops / result["model_clips_per_s"]
        rows.append(result)
        if not args.json:
            gib = 1 << 30
            print(f"{seconds:8.0f} s video {width}x{height}: {result['windows']} windows "
                  f"({result['failed']} failed) in {result['timeline_s']:.1f} s = {result['windows_per_s']:.2f} "
                  f"windows/s; model alone {result['model_clips_per_s']:.2f} clips/s -> ratio "
                  f"{result['ratio']:.2f}; peak RSS {result['peak_rss_bytes'] / gib:.2f} GiB (model loaded: "
                  f"{result['rss_loaded_bytes'] / gib:.2f} GiB)", flush=True)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    return 0
