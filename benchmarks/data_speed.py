"""Data loading speed: a training item against the bare PyAV decode of the same frames.

Same as ``tada benchmark data``; see :mod:`tada.bench.data`. Example::

    python benchmarks/data_speed.py --iters 20 --loader-workers 2 --json data_speed.json
"""

from __future__ import annotations

import argparse
import sys

from tada.bench.data import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
