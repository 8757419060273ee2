"""Benchmarks: every speed and cost measurement of the package, and the one entry point over them.

``tada benchmark NAME ...`` (= ``python -m tada.bench NAME ...``) runs the module of this package
registered under NAME in :data:`BENCHMARKS`; each exposes ``add_arguments(parser)`` and
``run(args)``. Only the chosen benchmark's module is imported, so one benchmark's import error
never breaks another's. Benchmarks report measurements and their ratios to a reference measured
in the same run; the goals those ratios are held to are stated in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, help). Add a line to plug a benchmark in.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "model": ("tada.bench.model", "clips/s of TAda2D/TSN vs a channels-last 2-D ResNet-50 over the same frames"),
    "data": ("tada.bench.data", "decoding and loading speed vs the bare PyAV floor"),
    "export": ("tada.bench.export", "eager vs exported (torch.export, ONNX Runtime) inference speed"),
    "windows": ("tada.bench.windows", "a long video's timeline: windows/s vs the model's clips/s, peak RSS"),
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
