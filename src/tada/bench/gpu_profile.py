"""Where a CUDA train step's time goes: TAda2D-R50 vs TSN-R50 vs the channels-last 2-D ResNet-50.

One bf16 train step (16 clips x 8 x 224, forward + cross-entropy + backward) of each model:

1. ``whole``: wall time per step (CUDA events, median), the same step replayed from a CUDA graph
   (no Python/launch overhead: the GPU-bound time), the sum of kernel time and the kernel count
   per step (profiler), and the ops with the most GPU time;
2. ``blocks``: one bottleneck of each stage at its real shape, forward + backward, eager and
   graphed: TSN's plain block, the TAda2D block, and the TAda2D block with parts taken out, so
   that each part's cost is a difference of two timings in the same run;
3. ``compiled``: the compiled TAda2D-R50 and ResNet-50 train steps and their top kernels.

    python -m tada.bench.gpu_profile [--parts whole,blocks,compiled]
    python -m tada.bench.gpu_profile --device cpu --size 64 --batch 2   # smoke test
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import traceback
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from tada.bench.model import Frames2DResNet, resnet50_2d
from tada.models import create_model
from tada.models.resnet import Base2DBlock, TAda2DBlock, set_kernel_layout


def _device_time(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def median_ms(self, fn: Callable[[], None], iters: int, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(iters):
            if self.device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                times.append(1e3 * (time.perf_counter() - t))
        return statistics.median(times)


def graphed(fn: Callable[[], None], params: list[torch.Tensor], device: torch.device) -> Callable[[], None] | None:
    """``fn`` (forward+backward of a block) captured once in a CUDA graph; None off CUDA."""
    if device.type != "cuda":
        return None
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            for p in params:
                p.grad = None
            fn()
    torch.cuda.current_stream().wait_stream(side)
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
               *, cache: bool = True) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
    return step


def fresh_grad_step(params: list[torch.Tensor], step: Callable[[], None]) -> Callable[[], None]:
    """``step`` after setting every gradient to None, as the engine's zero_grad(set_to_none) does.

    A function of its own so that the step it returns holds its model's tensors, not the loop's
    variables: a closure over those would see the next model's, or none after ``del``.
    """

    def eager() -> None:
        for p in params:
            p.grad = None
        step()

    return eager


def profile_step(step: Callable[[], None], steps: int, device: torch.device, top: int) -> None:
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()
    Timer(device).sync()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        Timer(device).sync()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA"] if device.type == "cuda" else []
    ktime = sum(_device_time(e) for e in kernels) / steps / 1e3
    kcount = sum(e.count for e in kernels) / steps
    print(f"    kernels: {kcount:.0f} per step, {ktime:.1f} ms GPU time per step")
    rows = sorted((e for e in events if not e.key.startswith("ProfilerStep")), key=_device_time, reverse=True)
    for e in rows[:top]:
        print(f"    {_device_time(e) / steps / 1e3:8.2f} ms {e.count // steps:5d}x  {e.key[:100]}")


# --------------------------------------------------------------------------------------------
def part_whole(args, device: torch.device, timer: Timer) -> None:
    x = torch.randn(args.batch, 3, 8, args.size, args.size, device=device)
    y = torch.randint(0, 400, (args.batch,), device=device)
    builders = {
        "resnet50_2d": lambda: Frames2DResNet(resnet50_2d(400)),
        "tsn_r50": lambda: create_model("tsn_r50", num_classes=400),
        "tada2d_r50": lambda: create_model("tada2d_r50", num_classes=400),
    }
    table = []
    for name, build in builders.items():
        model = build().to(device)
        model.channels_last = True
        model.train()
        eager = fresh_grad_step(list(model.parameters()), train_step(model, x, y, device))
        ms = timer.median_ms(eager, args.iters)
        g_ms = float("nan")
        replay = None
        if device.type == "cuda":  # the engine's TRAIN.CUDA_GRAPHS step
            from tada.engine.graphs import GraphedTrainStep

            graph_step = GraphedTrainStep(model, F.cross_entropy, autocast=lambda cache_enabled: torch.autocast(
                "cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled))
            replay = functools.partial(graph_step, x, y)
            del graph_step  # held by replay alone, so that deleting replay frees the graph's memory
            g_ms = timer.median_ms(replay, args.iters)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        print(f"\n=== {name}: eager {ms:.1f} ms/step, CUDA graph {g_ms:.1f} ms/step")
        profile_step(eager, 2, device, args.top)
        table.append((name, ms, g_ms, peak))
        del model, eager, replay
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    ref = table[0]
    print("\n| model (bf16 train step) | eager ms | x ref | CUDA graph ms | x ref |\n|---|---|---|---|---|")
    for name, ms, g_ms, _ in table:
        print(f"| {name} | {ms:.1f} | {ms / ref[1]:.2f} | {g_ms:.1f} | {g_ms / ref[2]:.2f} |")


class _NoRoute(TAda2DBlock):
    """TAda2D block with alpha == 1 and no routing function (cost of the routing = difference)."""

    def forward(self, x, num_frames):
        y = self.a_relu(self.a_bn(self.a(x)))
        z = F.conv2d(y, self.b.weight_2d, None, self.b.stride, self.b.padding)
        out = self.b_bn(z)
        z = out.add_(self.b_avgpool_bn(self.b_avgpool(z, num_frames)))
        return self.c_bn(self.c(self.b_relu(z)))


class _NoPool(TAda2DBlock):
    """TAda2D block without the temporal-pool branch (its cost = difference)."""

    def forward(self, x, num_frames):
        y = self.a_relu(self.a_bn(self.a(x)))
        alpha = self.b_rf(y, num_frames)
        z = self.b(y, alpha)
        return self.c_bn(self.c(self.b_relu(self.b_bn(z))))


class _MatmulPool(TAda2DBlock):
    """TAda2D block with the temporal pool as one banded (T, T) batched matmul (fewer passes; it
    changes the pool's rounding, to which training from scratch proved sensitive: see docs/benchmarks.md)."""

    def forward(self, x, num_frames):
        y = self.a_relu(self.a_bn(self.a(x)))
        alpha = self.b_rf(y, num_frames)
        z = self.b(y, alpha)
        n, c, h, w = z.shape
        v = z.permute(0, 2, 3, 1).reshape(n // num_frames, num_frames, h * w * c)
        band = torch.ones(num_frames, num_frames, device=z.device).triu_(-1).tril_(1).to(v.dtype)
        p = torch.baddbmm(v.detach(), band.expand(v.shape[0], -1, -1), v, beta=0.0, alpha=1 / 3)
        p = p.view(n, h, w, c).permute(0, 3, 1, 2)
        out = self.b_bn(z).add_(self.b_avgpool_bn(p))
        return self.c_bn(self.c(self.b_relu(out)))


def part_blocks(args, device: torch.device, timer: Timer) -> None:
    frames = 8
    n = args.batch * frames
    stages = [(256, 64, 56), (512, 128, 28), (1024, 256, 14), (2048, 512, 7)]  # res_2 of each stage
    scale = args.size / 224
    variants = {"tsn block": Base2DBlock, "tada2d block": TAda2DBlock, "tada - routing": _NoRoute,
                "tada - pool branch": _NoPool, "tada, matmul pool": _MatmulPool}
    print("\n| block res_2 (fwd+bwd, bf16) | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    graph_rows = []
    for c_out, width, hw in stages:
        hw = max(1, round(hw * scale))
        x = torch.randn(n, c_out, hw, hw, device=device).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        cells, gcells = [], []
        for cls in variants.values():
            block = cls(c_out, width, c_out, stride=1).to(device)
            for m in block.modules():
                if isinstance(m, nn.BatchNorm2d) and m.weight is not None:
                    nn.init.ones_(m.weight)  # pool BN live (it is zero at init)
            set_kernel_layout(block, channels_last=True)
            params = list(block.parameters()) + [x]

            def fn(block=block, x=x) -> None:
                with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
                    out = block(x, frames)
                out.float().sum().backward()

            def eager(fn=fn, params=params) -> None:
                for p in params:
                    p.grad = None
                fn()

            cells.append(timer.median_ms(eager, args.iters))
            replay = graphed(fn, params, device)
            gcells.append(timer.median_ms(replay, args.iters) if replay else float("nan"))
        print(f"| {width}ch {hw}x{hw} eager ms | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        graph_rows.append(f"| {width}ch {hw}x{hw} graph ms | " + " | ".join(f"{c:.3f}" for c in gcells) + " |")
    print("\n".join(graph_rows))


def part_compiled(args, device: torch.device, timer: Timer) -> None:
    x = torch.randn(args.batch, 3, 8, args.size, args.size, device=device)
    y = torch.randint(0, 400, (args.batch,), device=device)
    for name, build in (("resnet50_2d", lambda: Frames2DResNet(resnet50_2d(400))),
                        ("tada2d_r50", lambda: create_model("tada2d_r50", num_classes=400))):
        model = build().to(device)
        model.channels_last = True
        model.train()
        t0 = time.perf_counter()
        eager = fresh_grad_step(list(model.parameters()), train_step(torch.compile(model), x, y, device))
        eager()
        timer.sync()
        print(f"\n=== compiled {name}: compile {time.perf_counter() - t0:.0f} s, "
              f"{timer.median_ms(eager, args.iters):.1f} ms/step")
        profile_step(eager, 2, device, args.top)
        del model, eager
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="whole,blocks,compiled")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--top", type=int, default=22)
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    timer = Timer(device)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, "
          f"batch {args.batch} x 8 x {args.size}^2, bf16 autocast, channels-last")
    failed = []
    for part in args.parts.split(","):
        t0 = time.perf_counter()
        try:
            {"whole": part_whole, "blocks": part_blocks, "compiled": part_compiled}[part](args, device, timer)
        except Exception as exc:  # report every part that can run; the exit status says which failed
            failed.append(part)
            print(f"\n{part}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        print(f"[{part}: {time.perf_counter() - t0:.0f} s]", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
