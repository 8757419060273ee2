"""A short real training run on one GPU: TAda2D-R50 8x224, zoo batch 16, decoded synthetic videos.

It generates K400-like synthetic videos (256-340 px, 72-120 frames, H.264), then runs the engine's
own `train()` (data loader workers decoding with PyAV, the K400 8x8 config, AMP, channels-last,
cudnn.benchmark) for a few hundred iterations and reports, over the steady-state windows:

- clips/s of the whole loop, and of the model alone on random input (the GPU-bound ceiling);
- the fraction of loop time spent waiting for data;
- peak GPU memory (torch.cuda.max_memory_allocated).

``--routes video,frames,frames-gpu`` trains once per data route on the same clips: from the videos,
from their extracted JPEG frame folders decoded by the workers, and decoded on the GPU (nvjpeg).

    python -m tada.bench.gpu_train --out /tmp/tada_gpu_train --summary $OUT/gpu_train.json
    python -m tada.bench.gpu_train --smoke      # seconds, CPU or GPU: a tiny model, to check the script
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

K400 = "k400/tada2d_8x8"  # the packaged zoo config


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/tada_gpu_train", help="work folder (videos, run outputs)")
    p.add_argument("--summary", default=None, help="write the summary JSON here too")
    p.add_argument("--videos-per-class", type=int, default=16, help="distinct training videos per class (7 classes)")
    p.add_argument("--repeat", type=int, default=40,
                   help="the train list repeats the videos this often: one long epoch, so that the loader's "
                        "start (workers, first batches) falls in the warm-up steps, not in the figures")
    p.add_argument("--steps", type=int, default=160, help="training iterations")
    p.add_argument("--warmup-steps", type=int, default=40, help="iterations left out of the figures")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: CPUs - 2, at most 14)")
    p.add_argument("--amp", default="bf16", choices=["off", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true", help="TRAIN.CUDA_GRAPHS: replay each step from a CUDA graph")
    p.add_argument("--lr", type=float, default=0.03,
                   help="OPTIMIZER.BASE_LR: the zoo's 0.24 is for a global batch of 128; 0.03 is its linear "
                        "scaling to 16 (0.24 at batch 16 diverges on these random clips)")
    p.add_argument("--routes", default="video",
                   help="comma-separated data routes, each a training run: video (PyAV in the workers), "
                        "frames (JPEG frame folders, CPU decode), frames-gpu (JPEG bytes, nvjpeg on the GPU)")
    p.add_argument("--smoke", action="store_true", help="tiny model and data, a few steps: checks the script")
    return p.parse_args()


def _model_only(cfg, batch: int, steps: int) -> float:
    """Clips/s of forward+backward+SGD step on random input (no data loading): the GPU ceiling."""
    import torch

    from tada.engine.optim import build_optimizer
    from tada.engine.runtime import autocast, resolve_precision
    from tada.models import build_model

    dev = torch.device("cuda")
    model = build_model(cfg).to(dev)
    opt = build_optimizer(model, cfg.OPTIMIZER, cfg.BN)
    prec = resolve_precision(cfg.TRAIN.AMP, dev)
    crop, frames = cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.NUM_INPUT_FRAMES
    x = torch.randn(batch, 3, frames, crop, crop, device=dev)
    y = torch.randint(0, cfg.VIDEO.HEAD.NUM_CLASSES, (batch,), device=dev)
    scaler = torch.amp.GradScaler("cuda") if prec.scaler else None

    def step():
        with autocast(prec, dev):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def _route_overrides(args: argparse.Namespace, route: str, *, data: Path, out: Path, workers: int, cuda: bool,
                     log_period: int) -> list[str]:
    """The K400 config's overrides for one timed route (video, frames, frames-gpu) on the generated data."""
    overrides = [
        "DATA.DATA_ROOT_DIR", str(data), "DATA.ANNO_DIR", str(data), "TRAIN.DATASET", "synthetic",
        "TEST.DATASET", "synthetic", "DATA.TRAIN_LIST", "train_repeat.txt", "VIDEO.HEAD.NUM_CLASSES", "7",
        "NUM_GPUS", "1" if cuda else "0", "TRAIN.BATCH_SIZE", str(args.batch), "TRAIN.INIT", "",
        "TRAIN.AMP", repr(args.amp if cuda else "off"), "TRAIN.COMPILE", str(args.compile).lower(),
        "TRAIN.CUDA_GRAPHS", str(args.cuda_graphs and cuda).lower(), "OPTIMIZER.BASE_LR", str(args.lr),
        "OPTIMIZER.WARMUP_START_LR", str(args.lr / 24),
        "TRAIN.EVAL_PERIOD", "0", "TRAIN.CHECKPOINT_PERIOD", "1000", "TRAIN.AUTO_RESUME", "false",
        "DATA_LOADER.NUM_WORKERS", str(workers), "LOG_PERIOD", str(log_period),
        "OUTPUT_DIR", str(out / f"run_{route}_{int(time.time())}"),
        "DATA.FORMAT", "video" if route == "video" else "frames", "DATA.FRAMES_DIR", str(data / "frames"),
        "AUGMENTATION.USE_GPU", str(route == "frames-gpu").lower(),
    ]
    if args.smoke:
        overrides += ["VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
                      "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "DATA.TRAIN_CROP_SIZE", "32",
                      "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "TRAIN.BATCH_SIZE", "4"]
    return overrides


def _route_summary(args: argparse.Namespace, route: str, cfg, *, records: list[dict], warmup: int, cuda: bool,
                   workers: int, steps: int, log_period: int, loop_s: float, generation_s: float,
                   extraction: dict | None) -> dict:
    """One route's figures from its stats.jsonl records (the steady windows after ``warmup`` steps)."""
    import torch

    windows = [r for r in records if r["_type"] == "train_iter" and r["global_step"] > warmup]
    info = next((r for r in records if r["_type"] == "model_info"), {})
    seconds = sum(r["window_s"] for r in windows)
    clips = sum(r["window_clips"] for r in windows)
    waited = sum(r["window_data_s"] for r in windows)
    cpus = os.cpu_count() or 2
    return {
        "route": route,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "model": "TAda2D-R50" if not args.smoke else "TAda2D tiny (smoke)",
        "frames": cfg.DATA.NUM_INPUT_FRAMES,
        "crop": cfg.DATA.TRAIN_CROP_SIZE,
        "batch": cfg.TRAIN.BATCH_SIZE,
        "amp": cfg.TRAIN.AMP,
        "compile": cfg.TRAIN.COMPILE,
        "cuda_graphs": cfg.TRAIN.CUDA_GRAPHS,
        "workers": workers,
        "cpus": cpus,
        "steps": steps,
        "steady_steps": sum(1 for _ in windows) * log_period,
        "clips_per_s": clips / seconds if seconds else None,
        "step_ms": 1000 * seconds / max(clips / cfg.TRAIN.BATCH_SIZE, 1),
        "data_wait_fraction": waited / seconds if seconds else None,
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "whole_loop_s": loop_s,
        "video_generation_s": generation_s,
        "extraction": extraction,
        "params": info.get("params"),
        "gmacs_per_view": info.get("gmacs_train_view"),
    }


def main() -> int:
    args = _args()
    import torch

    from tada.config import load_config
    from tada.data.extract import ExtractSettings, extract_videos, read_video_list
    from tada.data.synthetic import generate_dataset
    from tada.engine import train

    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = sorted(set(routes) - {"video", "frames", "frames-gpu"})
    if unknown:
        raise SystemExit(f"--routes: unknown {unknown}; choose from video, frames, frames-gpu")
    cuda = torch.cuda.is_available()
    out = Path(args.out)
    data = out / "data"
    cpus = os.cpu_count() or 2
    workers = args.workers if args.workers is not None else max(1, min(cpus - 2, 14))
    per_class = 2 if args.smoke else args.videos_per_class
    t0 = time.perf_counter()
    generate_dataset(data, videos_per_class={"train": per_class, "val": 0, "test": 0},
                     lengths=(24, 40) if args.smoke else (72, 120), sizes=(64, 80) if args.smoke else (256, 340),
                     workers=min(cpus, 12))
    generation_s = time.perf_counter() - t0
    lines = (data / "train_list.txt").read_text()
    (data / "train_repeat.txt").write_text(lines * args.repeat)
    extraction = None
    if any(r.startswith("frames") for r in routes):
        report = extract_videos(read_video_list(data / "train_list.txt"), root=data, out=data / "frames",
                                name="train", settings=ExtractSettings(quality=90), workers=min(cpus, 12),
                                progress=False)
        if any(r.status == "failed" for r in report.results):
            raise SystemExit(report.summary())
        extraction = {"extract_s": report.seconds, "videos": len(report.results),
                      "frames_mb_per_video": sum(r.bytes for r in report.results) / 1e6 / len(report.results)}

    steps = 6 if args.smoke else args.steps
    warmup = 2 if args.smoke else args.warmup_steps
    log_period = 2 if args.smoke else 10
    summaries = []
    for route in routes:
        overrides = _route_overrides(args, route, data=data, out=out, workers=workers, cuda=cuda,
                                     log_period=log_period)
        if route == "frames-gpu" and not cuda:
            print("frames-gpu: skipped, no CUDA device")
            continue
        cfg = load_config(K400, overrides)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        train(cfg, stop_after_steps=steps)
        loop_s = time.perf_counter() - t0
        records = [json.loads(x) for x in (Path(cfg.OUTPUT_DIR) / "stats.jsonl").read_text().splitlines()]
        summaries.append(_route_summary(args, route, cfg, records=records, warmup=warmup, cuda=cuda,
                                        workers=workers, steps=steps, log_period=log_period, loop_s=loop_s,
                                        generation_s=generation_s, extraction=extraction))
    model_only = _model_only(cfg, cfg.TRAIN.BATCH_SIZE, 5 if args.smoke else 30) if cuda else None
    for summary in summaries:
        summary["model_only_clips_per_s"] = model_only
    text = json.dumps(summaries, indent=2)
    print(text)
    for summary in summaries:
        print(
            f"\n{summary['model']} {summary['frames']}x{summary['crop']}, batch {summary['batch']}, "
            f"{summary['amp']}, data from {summary['route']}: {summary['clips_per_s']:.1f} clips/s through the "
            f"loader ({summary['data_wait_fraction']:.1%} of the time waiting for data)"
            + (f", {model_only:.1f} clips/s model-only, peak GPU memory {summary['peak_gpu_mem_gb']:.2f} GiB"
               if cuda else ""),
        )
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
