"""`tada benchmark {model,data,export} ...`: one entry point over the per-area benchmarks.

Each area keeps its benchmark next to its code and exposes ``add_arguments(parser)`` and
``run(args)``. Only the chosen benchmark's module is imported, so one area's import error never
breaks another's benchmark.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, help). Add a line to plug a benchmark in.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "model": ("tada.models.speed", "clips/s of TAda2D/TSN vs a channels-last 2-D ResNet-50 over the same frames"),
    "data": ("tada.data.benchmark", "decoding and loading speed vs the bare PyAV floor"),
    "export": ("tada.export_speed", "eager vs exported (torch.export, ONNX Runtime) inference speed"),
    "windows": ("tada.predict_speed", "a long video's timeline: windows/s vs the model's clips/s, peak RSS"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "benchmarks: " + "; ".join(f"{k}: {h}" for k, (_, h) in BENCHMARKS.items())
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS), help="which benchmark ('tada benchmark NAME -h')")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="that benchmark's options")


def run(args: argparse.Namespace) -> int:
    module_name, help_text = BENCHMARKS[args.benchmark]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"tada benchmark {args.benchmark}", description=help_text)
    module.add_arguments(parser)
    sub_args = parser.parse_args(args.options)
    return int(module.run(sub_args) or 0)
