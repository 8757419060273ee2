"""Model speed: TAda2D-R50 and TSN-R50 vs a channels-last 2-D ResNet-50 over the same frames.

Same as ``tada benchmark model``; every option is passed through. Examples::

    # CPU (this repo's 2-core machine): one clip eval, two clips train, fp32, channels-last on
    python benchmarks/model_speed.py --modes eval --batch 1 --precisions fp32 --channels-last on --iters 8
    python benchmarks/model_speed.py --modes train --batch 2 --precisions fp32 --channels-last on --iters 4
    # a busy shared machine: one thread, ratios of process CPU time (robust to waiting for a core)
    python benchmarks/model_speed.py --threads 1 --clock cpu --iters 5
    # one CUDA GPU at the zoo's per-GPU batch, eager and compiled
    python benchmarks/model_speed.py --device cuda --batch 16 --iters 20 --warmup 5 --compile off,on

Run with the package installed (``pip install -e .``) or ``PYTHONPATH=src``.
"""

from __future__ import annotations

import argparse

from tada.bench import model as speed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    speed.add_arguments(parser)
    return speed.run(parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
