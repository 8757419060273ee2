"""Speed and memory of the video networks against the limit: a 2-D ResNet-50 over the same frames.

The reference is a plain torchvision-layout ResNet-50 (nn.Conv2d, max-pool stem) run on the
B*T frames of the clip, channels-last, its logits averaged over frames: what any 2-D network
costs on these frames, so ``time(model) / time(reference)`` measured in the same run is the
overhead of temporal modelling. ``--reference`` picks another one, e.g. ``convnext_tiny_frames``
(the plain ConvNeXt over the same frames) for TAdaConvNeXtV2. A model name with the suffix
``+grouped`` runs every TAdaConv2dV2 in the official formulation (per-frame kernels, one grouped
conv) with the same weights: the official code's cost. Timings interleave the models round by
round (a shared machine drifts) and report medians. Works on CPU and CUDA (events, peak memory,
torch.compile).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tada.models.layers import video_to_frames
from tada.ops.tadaconv_v2 import TAdaConv2dV2, tada_conv2d_v2_grouped_reference

__all__ = [
    "BenchResult",
    "Frames2DResNet",
    "add_arguments",
    "bench_models",
    "format_table",
    "resnet50_2d",
    "run",
]


# ------------------------------------------------------------------------------------------------
# The reference: a torchvision-layout 2-D ResNet-50 over frames
# ------------------------------------------------------------------------------------------------
class _Bottleneck2d(nn.Module):
    def __init__(self, c_in: int, width: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def resnet50_2d(num_classes: int = 400) -> nn.Sequential:
    """A standard 2-D ResNet-50 (v1.5, max-pool stem) on (N, 3, H, W) images."""
    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
    ]
    c_in = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(_Bottleneck2d(c_in, width, width * 4, stride if i == 0 else 1))
            c_in = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes)]
    return nn.Sequential(*layers)


class Frames2DResNet(nn.Module):
    """A 2-D network applied to every frame of (B, 3, T, H, W), logits averaged over T."""

    def __init__(self, net: nn.Module, *, channels_last: bool = True) -> None:
        super().__init__()
        self.net = net
        self._channels_last = False
        self.channels_last = channels_last

    @property
    def channels_last(self) -> bool:
        return self._channels_last

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        """Channels-last input and weights (the fastest layout a plain 2-D network can have)."""
        self._channels_last = bool(value)
        self.net.to(memory_format=torch.channels_last if value else torch.contiguous_format)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[0], x.shape[2]
        logits = self.net(video_to_frames(x, channels_last=self.channels_last))
        return logits.view(b, t, -1).mean(dim=1)


# ------------------------------------------------------------------------------------------------
# The official formulation of TAdaConvV2, for comparison
# ------------------------------------------------------------------------------------------------
GROUPED_SUFFIX = "+grouped"


class GroupedTAdaConv2dV2(TAdaConv2dV2):
    """A TAdaConv2dV2 computed as the official code does: B*T calibrated kernels, one grouped conv."""

    def calibrated_conv(self, x: Tensor, num_frames: int, alpha_w: Tensor, alpha_b: Tensor | None) -> Tensor:
        n, c, h, w = x.shape
        b = n // num_frames

        def video(a: Tensor) -> Tensor:  # (B*T, C, 1, 1) -> (B, C, T, 1, 1)
            return a.reshape(b, num_frames, -1, 1, 1).transpose(1, 2)

        y = tada_conv2d_v2_grouped_reference(
            x.reshape(b, num_frames, c, h, w).transpose(1, 2), video(alpha_w),
            None if alpha_b is None else video(alpha_b), self.weight, self.bias,
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups, cal_dim=self.cal_dim,
        )
        return y.transpose(1, 2).reshape(n, y.shape[1], y.shape[3], y.shape[4])


def official_tadaconv_v2(model: nn.Module) -> nn.Module:
    """``model`` with every TAdaConv2dV2 switched, in place, to the grouped per-frame-kernel form (same weights)."""
    for module in model.modules():
        if type(module) is TAdaConv2dV2:
            module.__class__ = GroupedTAdaConv2dV2
    return model


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------
@dataclass
class BenchResult:
    model: str
    mode: str  # eval | train
    precision: str  # fp32 | bf16
    channels_last: bool
    compiled: bool
    batch: int
    frames: int
    size: int
    seconds: float  # median wall-clock time per step
    clips_per_s: float
    peak_mem_gib: float | None = None
    cpu_seconds: float | None = None  # CPU: median process CPU time per step (all threads)
    ratio: float | None = None  # time / the reference's time (same mode, precision, compile, graphs)
    graphs: bool = False  # CUDA: the step replayed from a CUDA graph (tada.engine.graphs)
    saved_mib: float | None = None  # train: activation memory kept for the backward (any device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(model: nn.Module, mode: str, x: Tensor, y: Tensor, precision: str,
               device: torch.device, graphs: bool = False) -> Callable[[], None]:
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if precision == "bf16" else contextlib.nullcontext()
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if graphs:
        if device.type != "cuda" or mode != "train":
            raise ValueError("CUDA graphs are measured for the train step on a CUDA device (TRAIN.CUDA_GRAPHS)")
        from tada.engine.graphs import GraphedTrainStep

        def graph_autocast(cache_enabled: bool = True):
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                                  cache_enabled=cache_enabled)

        train_step = GraphedTrainStep(model, F.cross_entropy, autocast=graph_autocast)
        return lambda: train_step(x, y)

    if mode == "eval":
        def step() -> None:
            with torch.inference_mode(), autocast:
                model(x)
    else:
        def step() -> None:
            for p in params:
                p.grad = None
            with autocast:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
    return step


def saved_activation_bytes(model: nn.Module, x: Tensor, precision: str) -> int:
    """Bytes of the tensors one training forward keeps for its backward, parameters excluded.

    The bulk of a train step's peak memory beyond parameters, gradients and optimizer state, and
    device independent: a CPU run measures what a GPU run will keep (cuDNN workspaces aside).
    Storages shared by several saved tensors (in-place ReLU outputs, views) count once.
    """
    storages: dict[tuple[int, str], int] = {}

    def pack(t: Tensor) -> Tensor:
        st = t.untyped_storage()
        storages[(st.data_ptr(), str(t.device))] = st.nbytes()
        return t

    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        model(x)
    params = {(p.untyped_storage().data_ptr(), str(p.device)) for p in model.parameters()}
    return sum(n for key, n in storages.items() if key not in params)


def _time_once(step: Callable[[], None], device: torch.device) -> tuple[float, float | None]:
    """(wall seconds, process CPU seconds or None on CUDA) of one step."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, None
    c0, t0 = time.process_time(), time.perf_counter()
    step()
    return time.perf_counter() - t0, time.process_time() - c0


def bench_models(
    builders: dict[str, Callable[[], nn.Module]],
    *,
    mode: str,
    precision: str = "fp32",
    channels_last: bool = True,
    compiled: bool = False,
    batch: int = 1,
    frames: int = 8,
    size: int = 224,
    iters: int = 3,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    seed: int = 0,
    graphs: bool = False,
) -> list[BenchResult]:
    """Time each model's eval forward or train step (forward, cross-entropy, backward), interleaved.

    Every round runs each model once; the result is the per-model median over ``iters`` rounds.
    On CUDA, ``peak_mem_gib`` is the peak allocated memory of that model's steps.
    """
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, frames, size, size, generator=gen).to(device)
    steps: dict[str, Callable[[], None]] = {}
    times: dict[str, list[float]] = {}
    cpu_times: dict[str, list[float | None]] = {}
    peaks: dict[str, float | None] = {}
    saved: dict[str, float | None] = {}
    for name, build in builders.items():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            if not graphs:  # a captured graph keeps pointers into memory (cuBLAS workspace) it does not own
                torch.cuda.empty_cache()
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        model = build().to(device)
        model.channels_last = channels_last
        model.train(mode == "train")
        num_classes = _num_classes(model)
        y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
        if mode == "train":
            saved[name] = saved_activation_bytes(model, x, precision) / 2**20
        if compiled:
            model = torch.compile(model)
        step = _make_step(model, mode, x, y, precision, device, graphs)
        for _ in range(max(warmup, 1)):
            step()
        _sync(device)
        # this model's own peak: parameters, gradients, activations and workspace
        peaks[name] = (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None
        if not graphs:  # a graph's gradients live in its own memory and are overwritten at each replay
            for p in model.parameters():
                p.grad = None
        steps[name] = step
        times[name] = []
        cpu_times[name] = []
    for _ in range(iters):
        for name, step in steps.items():
            wall, cpu = _time_once(step, device)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    results = []
    for name in builders:
        sec = statistics.median(times[name])
        cpu = statistics.median(cpu_times[name]) if device.type == "cpu" else None
        results.append(BenchResult(name, mode, precision, channels_last, compiled, batch, frames, size,
                                   sec, batch / sec, peaks[name], cpu, graphs=graphs, saved_mib=saved.get(name)))
    return results


def _num_classes(model: nn.Module) -> int:
    for m in reversed(list(model.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
    raise ValueError("model has no Linear classifier")


REFERENCE = "resnet50_2d"


def build_named(name: str, num_classes: int = 400) -> nn.Module:
    """``resnet50_2d``, a registered model, or a registered model + ``+grouped`` (official TAdaConvV2 form)."""
    from tada.models.registry import create_model

    if name == REFERENCE:
        return Frames2DResNet(resnet50_2d(num_classes))
    if name.endswith(GROUPED_SUFFIX):
        return official_tadaconv_v2(create_model(name[: -len(GROUPED_SUFFIX)], num_classes=num_classes))
    return create_model(name, num_classes=num_classes)


def default_builders(num_classes: int = 400, models: Sequence[str] = ("tada2d_r50", "tsn_r50"),
                     reference: str = REFERENCE) -> dict[str, Callable]:
    """The reference (``resnet50_2d`` unless told otherwise) and the named models, by name."""
    builders: dict[str, Callable] = {reference: lambda: build_named(reference, num_classes)}
    for name in models:
        builders[name] = (lambda n=name: build_named(n, num_classes))
    return builders


def format_table(results: Sequence[BenchResult]) -> str:
    head = (f"{'model':<28}{'mode':<7}{'prec':<6}{'cl':<5}{'comp':<6}{'graph':<6}{'batch':>6}{'s/step':>10}{'cpu s':>9}"
            f"{'clips/s':>10}{'x ref':>8}{'peak GiB':>10}{'saved MiB':>11}")
    lines = [head, "-" * len(head)]
    for r in results:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        peak = f"{r.peak_mem_gib:.2f}" if r.peak_mem_gib is not None else "-"
        cpu = f"{r.cpu_seconds:.3f}" if r.cpu_seconds is not None else "-"
        kept = f"{r.saved_mib:.0f}" if r.saved_mib is not None else "-"
        lines.append(
            f"{r.model:<28}{r.mode:<7}{r.precision:<6}{('on' if r.channels_last else 'off'):<5}"
            f"{('yes' if r.compiled else 'no'):<6}{('yes' if r.graphs else 'no'):<6}{r.batch:>6}{r.seconds:>10.4f}"
            f"{cpu:>9}{r.clips_per_s:>10.2f}"
            f"{ratio:>8}{peak:>10}{kept:>11}"
        )
    return "\n".join(lines)


def _set_ratios(results: list[BenchResult], clock: str = "wall", reference: str = REFERENCE) -> None:
    """Ratio to the channels-last reference of the same mode, precision, compile and graph setting.

    ``clock="cpu"`` compares process CPU time: with one thread on a shared machine it measures
    the work done and ignores the time the process waited for a core.
    """
    def t(r: BenchResult) -> float:
        if clock == "cpu":
            if r.cpu_seconds is None:
                raise ValueError("clock='cpu' needs CPU timings (device cpu)")
            return r.cpu_seconds
        return r.seconds

    for r in results:
        ref = [q for q in results if q.model == reference and q.mode == r.mode and q.precision == r.precision
               and q.compiled == r.compiled and q.graphs == r.graphs and q.channels_last]
        r.ratio = t(r) / t(ref[0]) if ref else None


def run_suite(
    *,
    models: Sequence[str] = ("tada2d_r50", "tsn_r50"),
    modes: Sequence[str] = ("eval", "train"),
    precisions: Sequence[str] = ("fp32", "bf16"),
    channels_last: Sequence[bool] = (True, False),
    compiled: Sequence[bool] = (False,),
    graphs: Sequence[bool] = (False,),
    batch: int = 1,
    frames: int = 8,
    size: int = 224,
    iters: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    num_classes: int = 400,
    clock: str = "wall",
    reference: str = REFERENCE,
    log: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """All combinations; the reference is timed channels-last (the limit) in each (mode, precision, compile)."""
    results: list[BenchResult] = []
    builders = default_builders(num_classes, models, reference)
    for comp, graph in ((c, g) for c in compiled for g in graphs if not (c and g)):
        for mode in modes if not graph else [m for m in modes if m == "train"]:
            for prec in precisions:
                for cl in channels_last:
                    names = dict(builders) if cl else {k: v for k, v in builders.items() if k != reference}
                    res = bench_models(names, mode=mode, precision=prec, channels_last=cl, compiled=comp,
                                       batch=batch, frames=frames, size=size, iters=iters, warmup=warmup,
                                       device=device, graphs=graph)
                    results.extend(res)
                    if log is not None:
                        for r in res:
                            log(f"{r.model} {mode} {prec} cl={cl} compiled={comp} graphs={graph}: "
                                f"{r.seconds:.4f} s/step")
    _set_ratios(results, clock, reference)
    return results


# ------------------------------------------------------------------------------------------------
# `tada benchmark model`
# ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="tada2d_r50,tsn_r50",
                        help="registered models; NAME+grouped runs NAME's TAdaConv2dV2s in the official grouped form")
    parser.add_argument("--reference", default=REFERENCE,
                        help="the model every ratio divides by, always timed (channels-last): resnet50_2d or a "
                             "registered model, e.g. convnext_tiny_frames")
    parser.add_argument("--modes", default="eval,train", help="eval (forward) and/or train (forward+backward)")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast)")
    parser.add_argument("--channels-last", default="on,off", help="on and/or off")
    parser.add_argument("--compile", default="off", help="off and/or on (torch.compile)")
    parser.add_argument("--cuda-graphs", default="off", help="off and/or on: replay each train step from a CUDA "
                                                          "graph (CUDA; tada.engine.graphs, as TRAIN.CUDA_GRAPHS)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--no-cudnn-benchmark", action="store_true", help="CUDA: leave cudnn.benchmark off")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="ratios from wall time, or from process CPU time (CPU only; robust on a busy machine "
                             "with --threads 1)")


def _csv(value: str, allowed: dict[str, object], what: str) -> list:
    out = []
    for item in (v.strip() for v in value.split(",") if v.strip()):
        if item not in allowed:
            raise SystemExit(f"--{what}: {item!r} is not one of {sorted(allowed)}")
        out.append(allowed[item])
    return out


def run(args: argparse.Namespace) -> int:
    if "on" in args.cuda_graphs and not args.device.startswith("cuda"):
        raise SystemExit("--cuda-graphs on needs --device cuda")
    if args.iters < 1 or args.warmup < 0 or args.batch < 1 or args.frames < 1 or args.size < 1:
        raise SystemExit("--iters, --batch, --frames and --size must be >= 1 and --warmup >= 0")
    from tada.models.registry import is_model, list_models

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if not is_model(m.removesuffix(GROUPED_SUFFIX))]
    if args.reference != REFERENCE and not is_model(args.reference):
        unknown.append(args.reference)
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; registered: {list_models()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    results = run_suite(
        models=names, reference=args.reference,
        modes=_csv(args.modes, {"eval": "eval", "train": "train"}, "modes"),
        precisions=_csv(args.precisions, {"fp32": "fp32", "bf16": "bf16"}, "precisions"),
        channels_last=_csv(args.channels_last, {"on": True, "off": False}, "channels-last"),
        compiled=_csv(args.compile, {"on": True, "off": False}, "compile"),
        graphs=_csv(args.cuda_graphs, {"on": True, "off": False}, "cuda-graphs"),
        batch=args.batch, frames=args.frames, size=args.size, iters=args.iters, warmup=args.warmup,
        device=args.device, clock=args.clock, log=lambda s: print(s, flush=True),
    )
    print()
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu, {torch.get_num_threads()} threads"
    load = "" if not hasattr(os, "getloadavg") else f", load average {os.getloadavg()[0]:.2f}"
    print(f"{device}{load}, {args.frames}x{args.size}x{args.size}, batch {args.batch}, torch {torch.__version__}; "
          f"x ref = {args.clock} time over the channels-last {args.reference}'s "
          "(same mode, precision, compile, graphs)")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0
