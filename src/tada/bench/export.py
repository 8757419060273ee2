"""Inference speed of the deployment paths, as ratios to eager PyTorch fp32, measured in one run.

Paths: eager fp32 (NCHW frames), eager channels-last, the exported ``.pt2`` program (plain-op
blocks, BN folded), ``torch.compile`` for inference (inductor with freezing; its compile time
reported apart) and onnxruntime on the exported ONNX model (all graph optimisations, ``threads``
intra-op threads); also eager bf16 autocast (channels-last), the one path that changes the numerics
(its logit difference is in the table). Like
:mod:`tada.bench.model`, timings interleave the paths round by round (a shared machine drifts)
and report medians. The model gets real BN statistics from a few train-mode batches first, so
its logits are finite and the onnxruntime-vs-eager difference is meaningful.

    tada benchmark export --model tada2d_r50 --frames 8 --size 224 --iters 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["VARIANTS", "PathResult", "add_arguments", "bench_export", "format_table", "run"]

VARIANTS = ("eager", "eager-cl", "exported-program", "compile", "onnxruntime", "eager-bf16")
EXACT_PATHS = ("eager", "eager-cl", "exported-program", "compile", "onnxruntime")  # fp32: same logits to ~1e-5


@dataclass
class PathResult:
    path: str
    seconds: float  # median per batch
    clips_per_s: float
    speedup: float | None = None  # eager fp32 seconds / this path's seconds (medians)
    best_s: float | None = None  # fastest round: the least disturbed by other load on a shared machine
    speedup_best: float | None = None  # eager fp32 best / this path's best
    setup_s: float | None = None  # export + session creation, or compile (first call)
    max_abs_diff: float | None = None  # logits vs eager fp32 on the benchmark batch


def calibrate(
    model: nn.Module,
    *,
    frames: int,
    size: int,
    batches: int = 1,
    batch: int = 2,
    seed: int = 0,
    routing_scale: float = 0.01,
    pool_bn_scale: float = 0.1,
) -> nn.Module:
    """Real BN statistics (cumulative over a few random train-mode batches) and non-trivial temporal
    paths (routing output and pool-BN weights drawn small), then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("b_rf.b.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * routing_scale)
            elif "b_avgpool_bn" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * pool_bn_scale)
        model.train()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        for _ in range(batches):
            model(torch.randn(batch, 3, frames, size, size, generator=gen))
    return model.eval()


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _inference_steps(
    model: nn.Module,
    x: Tensor,
    *,
    variants: Sequence[str],
    frames: int,
    size: int,
    batch: int,
    exporter: str,
    threads: int,
    workdir: str | os.PathLike | None,
    say: Callable[[str], None],
) -> tuple[dict[str, Callable[[], Tensor]], dict[str, float]]:
    """One inference callable per path (eager fp32 always), and the set-up seconds of the paths that have one."""
    from tada.deploy.export import export_model

    steps: dict[str, Callable[[], Tensor]] = {}
    setup: dict[str, float] = {}

    def eager_step(m: nn.Module) -> Callable[[], Tensor]:
        def step() -> Tensor:
            with torch.inference_mode():
                return m(x)
        return step

    steps["eager"] = eager_step(model)
    if "eager-cl" in variants:
        cl = copy.deepcopy(model)
        cl.channels_last = True
        steps["eager-cl"] = eager_step(cl)
    if "eager-bf16" in variants:  # reduced precision: faster where the CPU has bf16 dot products, not exact
        bf = copy.deepcopy(model)
        bf.channels_last = True

        def bf16_step() -> Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return bf(x).float()

        steps["eager-bf16"] = bf16_step
    if "exported-program" in variants:  # the .pt2 file of `tada export --format exported-program`
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = Path(tmp) / "model.pt2"
            t0 = time.perf_counter()
            export_model(model, path, fmt="exported-program", num_frames=frames, crop_size=size, batch=batch,
                         verify=False)
            program = torch.export.load(str(path)).module()
            setup["exported-program"] = time.perf_counter() - t0
        steps["exported-program"] = eager_step(program)
    if "compile" in variants:
        # Inductor with freezing: for inference the weights are constants (BN folded, weights prepacked).
        import torch._inductor.config as inductor_config

        compiled = torch.compile(copy.deepcopy(model))
        steps["compile"] = eager_step(compiled)
        say("torch.compile (inductor, freezing): compiling (first call) ...")
        with inductor_config.patch(freezing=True):
            setup["compile"] = _timed(steps["compile"])
        say(f"torch.compile: {setup['compile']:.1f} s")
    if "onnxruntime" in variants:
        from tada.deploy.serving import OnnxPredictor

        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = Path(tmp) / "model.onnx"
            say(f"onnxruntime: exporting with the {exporter} exporter ...")
            t0 = time.perf_counter()
            export_model(model, path, fmt="onnx", num_frames=frames, crop_size=size, batch=batch,
                         exporter=exporter, verify=False)
            predictor = OnnxPredictor(path, sidecar={"format": "onnx"}, threads=threads)
            setup["onnxruntime"] = time.perf_counter() - t0
        say(f"onnxruntime: export + session {setup['onnxruntime']:.1f} s")
        xn = x.numpy()
        steps["onnxruntime"] = lambda: torch.from_numpy(predictor.run(xn))
    return steps, setup


def bench_export(
    *,
    model_name: str = "tada2d_r50",
    num_classes: int = 400,
    frames: int = 8,
    size: int = 224,
    batch: int = 1,
    iters: int = 3,
    warmup: int = 1,
    threads: int = 2,
    variants: Sequence[str] = VARIANTS,
    exporter: str = "dynamo",
    workdir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    model_kwargs: dict | None = None,
) -> list[PathResult]:
    """Time each inference path on one (batch, 3, frames, size, size) input; eager fp32 is always timed."""
    from tada.models import create_model

    if warmup < 1 or iters < 1:
        raise ValueError(f"warmup and iters must be >= 1, got {warmup} and {iters}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {VARIANTS}")
    say = log or (lambda s: None)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = calibrate(create_model(model_name, num_classes=num_classes, **(model_kwargs or {})),
                      frames=frames, size=size)
    model.channels_last = False
    x = torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x)
    steps, setup = _inference_steps(model, x, variants=variants, frames=frames, size=size, batch=batch,
                                    exporter=exporter, threads=threads, workdir=workdir, say=say)
    outputs: dict[str, Tensor] = {}
    for name, step in steps.items():
        for _ in range(warmup):
            outputs[name] = step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(iters):
        for name, step in steps.items():
            times[name].append(_timed(step))
        say(f"round {r + 1}/{iters}: " + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    base, base_best = statistics.median(times["eager"]), min(times["eager"])
    results = []
    for name in steps:
        sec, best = statistics.median(times[name]), min(times[name])
        diff = float((outputs[name].float() - ref.float()).abs().max())
        results.append(PathResult(name, sec, batch / sec, base / sec, best, base_best / best, setup.get(name), diff))
    return results


def format_table(results: Sequence[PathResult]) -> str:
    head = (f"{'path':<18}{'s/batch':>10}{'clips/s':>10}{'x eager':>9}{'best s':>9}{'x (best)':>10}"
            f"{'setup s':>10}{'max|dlogit|':>13}")
    lines = [head, "-" * len(head)]
    for r in results:
        setup = f"{r.setup_s:.1f}" if r.setup_s is not None else "-"
        diff = f"{r.max_abs_diff:.1e}" if r.max_abs_diff is not None else "-"
        lines.append(f"{r.path:<18}{r.seconds:>10.3f}{r.clips_per_s:>10.2f}{r.speedup:>9.2f}{r.best_s:>9.3f}"
                     f"{r.speedup_best:>10.2f}{setup:>10}{diff:>13}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# `tada benchmark export`
# ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tada2d_r50", help="registered model (default tada2d_r50)")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (median); each runs every path once")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (eager is always timed)")
    parser.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo", help="ONNX exporter")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")


def run(args: argparse.Namespace) -> int:
    from tada.errors import TadaError
    from tada.models.registry import is_model, list_models

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise TadaError(f"--variants: unknown {unknown}; choose from {','.join(VARIANTS)}")

    if not is_model(args.model):
        raise TadaError(f"--model {args.model!r} is not registered; choose from {list_models()}")
    if args.iters < 1 or args.batch < 1 or args.frames < 1 or args.size < 1:
        raise TadaError("--iters, --batch, --frames and --size must be >= 1")
    load_before = os.getloadavg()[0]
    results = bench_export(
        model_name=args.model, num_classes=args.num_classes, frames=args.frames, size=args.size,
        batch=args.batch, iters=args.iters, warmup=args.warmup, threads=args.threads, variants=variants,
        exporter=args.exporter, log=lambda s: print(s, flush=True),
    )
    print()
    print(f"{args.model} {args.frames}x{args.size}x{args.size}, batch {args.batch}, threads {args.threads}, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs; x eager = eager fp32 s / path s, medians of "
          f"{args.iters} interleaved rounds; 'best' = fastest round (least disturbed on a shared machine)")
    print(f"1-min load average: {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"(above {os.cpu_count()} means other processes shared the CPUs: trust 'best' more)")
    print(format_table(results))
    exact = [r for r in results if r.path in EXACT_PATHS]
    for label, pool in (("fastest fp32 path", exact), ("fastest overall", results)):
        if pool:
            best = max(pool, key=lambda r: r.speedup_best or 0.0)
            print(f"{label}: {best.path}, {best.speedup:.2f}x eager fp32 (medians), "
                  f"{best.speedup_best:.2f}x (best rounds)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0

