"""Where a CUDA train step's time goes: TAda2D-R50 vs the channels-last 2-D ResNet-50 reference.

Profiles a few bf16 train steps (16 clips x 8 x 224, eager) of each model and prints the GPU time
per op (self device time), the number of ops and the CPU time per step, so that the gap between
the two models can be attributed (memory-bound extras, launch overhead, a slow kernel).

    PYTHONPATH=src python3 benchmarks/gpu_model_profile.py [--steps 3] [--precision bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from tada.models import create_model
from tada.models.speed import Frames2DResNet, resnet50_2d


def _device_time(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    args = parser.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = True
    x = torch.randn(args.batch, 3, 8, args.size, args.size, device=dev)
    y = torch.randint(0, 400, (args.batch,), device=dev)
    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for name, build in (("resnet50_2d", lambda: Frames2DResNet(resnet50_2d(400))),
                        ("tada2d_r50", lambda: create_model("tada2d_r50", num_classes=400))):
        model = build().to(dev)
        model.channels_last = True
        model.train(args.mode == "train")

        def step() -> None:
            if args.mode == "eval":
                with torch.inference_mode(), autocast:
                    model(x)
                return
            for p in model.parameters():
                p.grad = None
            with autocast:
                loss = F.cross_entropy(model(x), y)
            loss.backward()

        for _ in range(3):
            step()
        sync()
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
            sync()
        wall = (time.perf_counter() - t0) / args.steps
        events = prof.key_averages()
        gpu_total = sum(_device_time(e) for e in events) / args.steps / 1e3
        ops = sum(e.count for e in events if e.key.startswith("aten::")) / args.steps
        print(f"\n=== {name} {args.mode} {args.precision}: {wall * 1e3:.1f} ms/step under the profiler, "
              f"GPU self time {gpu_total:.1f} ms/step, {ops:.0f} aten ops/step")
        rows = sorted(events, key=_device_time, reverse=True)[: args.top]
        for e in rows:
            print(f"  {_device_time(e) / args.steps / 1e3:8.2f} ms  {e.count // args.steps:5d}x  {e.key[:90]}")
        del model
        if cuda:
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
