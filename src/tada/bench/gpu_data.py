"""Does the loader keep a GPU busy? Loader clips/s, the GPU resize route, and the data-wait
fraction of real TAda2D-R50 training steps (bf16, per-GPU batch 16, K400 8x8 items at 224).

Needs CUDA. Sources are the K400-like clips of ``tada benchmark data`` (10 s, 340x256, x264
defaults), generated into ``--cache`` or a temporary folder. Prints one JSON object::

    python -m tada.bench.gpu_data --workers 15 --steps 40
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from tada.bench.data import _spec, write_benchmark_sources
from tada.data.annotations import VideoEntry
from tada.data.datasets import VideoDataset
from tada.data.decode import open_video
from tada.data.loader import collate, gpu_transform


class _Norm:
    """The two config keys gpu_transform reads (DATA.MEAN/STD of the zoo configs)."""

    class DATA:
        MEAN = [0.45] * 3
        STD = [0.225] * 3


def _dataset(files: list[Path], *, gpu: bool, n: int) -> VideoDataset:
    entries = [VideoEntry(str(files[i % len(files)]), i % 400) for i in range(n)]
    return VideoDataset(entries, split="train", spec=_spec("k400", gpu=gpu),
                        open_reader=functools.partial(open_video, threads=1), name="k400")


def _loader(files, *, gpu: bool, workers: int, batch: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        _dataset(files, gpu=gpu, n=4096), batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
        pin_memory=True, persistent_workers=workers > 0, prefetch_factor=4 if workers else None, drop_last=True)


def _warm(it, workers: int) -> None:
    for _ in range(max(workers, 1)):  # every worker has started and delivered once
        next(it)


def loader_rate(files, *, gpu: bool, workers: int, batch: int, batches: int) -> float:
    it = iter(_loader(files, gpu=gpu, workers=workers, batch=batch))
    _warm(it, workers)
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += len(next(it)["index"])
    return seen / (time.perf_counter() - start)


def gpu_route_check(files, *, batch: int) -> dict:
    """The GPU route's batch equals the CPU route's; its cost per batch; bytes moved to the device."""
    cpu_ds, gpu_ds = _dataset(files, gpu=False, n=batch), _dataset(files, gpu=True, n=batch)
    cpu_items, gpu_items = [], []
    for i in range(batch):
        torch.manual_seed(i)
        cpu_items.append(cpu_ds[i])
        torch.manual_seed(i)
        gpu_items.append(gpu_ds[i])
    ref, raw = collate(cpu_items)["video"], collate(gpu_items)
    out = gpu_transform(raw, _Norm, "cuda")["video"]
    err = float((out.cpu() - ref).abs().max())
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        gpu_transform(raw, _Norm, "cuda")
    torch.cuda.synchronize()
    return {"max_abs_diff_vs_cpu": err, "ms_per_batch": round((time.perf_counter() - start) / 20 * 1000, 2),
            "host_to_device_mb_uint8_boxes": round(raw["video"].numel() / 1e6, 1),
            "host_to_device_mb_float_clips": round(ref.numel() * 4 / 1e6, 1)}


def data_wait(files, *, gpu: bool, workers: int, batch: int, steps: int) -> dict:
    """Real training steps fed by the loader: the fraction of time spent waiting for batches."""
    from tada.models import create_model

    torch.backends.cudnn.benchmark = True
    model = create_model("tada2d_r50", num_classes=400, channels_last=True).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(video, label):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(video), label)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    x = torch.randn(batch, 3, 8, 224, 224, device="cuda")
    y = torch.randint(0, 400, (batch,), device="cuda")
    for _ in range(5):
        step(x, y)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        step(x, y)
    torch.cuda.synchronize()
    gpu_only = 10 * batch / (time.perf_counter() - start)
    it = iter(_loader(files, gpu=gpu, workers=workers, batch=batch))
    _warm(it, workers)
    wait = compute = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        video = gpu_transform(b, _Norm, "cuda")["video"] if gpu else b["video"].cuda(non_blocking=True)
        step(video, b["label"].cuda(non_blocking=True))
        torch.cuda.synchronize()
        wait += t1 - t0
        compute += time.perf_counter() - t1
    return {"gpu_only_clips_per_s": round(gpu_only, 1), "fed_clips_per_s": round(steps * batch / (wait + compute), 1),
            "data_wait_fraction": round(wait / (wait + compute), 3),
            "step_ms": round(1000 * compute / steps, 1), "wait_ms": round(1000 * wait / steps, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=15, help="DataLoader workers (default 15: 16 cores)")
    parser.add_argument("--batch", type=int, default=16, help="per-GPU batch (default 16, as the zoo's 128 on 8 GPUs)")
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per route")
    parser.add_argument("--cache", default=None, help="folder for the generated sources")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tada.bench.gpu_data needs CUDA", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tada-bench-") as tmp:
        files = write_benchmark_sources(Path(args.cache) if args.cache else Path(tmp))["k400"]
        result = {"gpu": torch.cuda.get_device_name(0), "workers": args.workers, "batch": args.batch,
                  "gpu_route": gpu_route_check(files, batch=args.batch)}
        for gpu in (False, True):
            route = "USE_GPU" if gpu else "CPU transform"
            result[f"loader_clips_per_s ({route})"] = round(
                loader_rate(files, gpu=gpu, workers=args.workers, batch=args.batch, batches=20), 1)
            result[f"training ({route})"] = data_wait(files, gpu=gpu, workers=args.workers, batch=args.batch,
                                                      steps=args.steps)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
