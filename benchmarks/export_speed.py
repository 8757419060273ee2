"""Deployment speed: eager fp32, eager channels-last, the exported .pt2 program, torch.compile, onnxruntime.

Ratios to eager fp32 measured in one run; same as `tada benchmark export`. Example (a 2-core CPU):

    .venv/bin/python benchmarks/export_speed.py --iters 3 --json output/export_speed.json
"""

from tada.bench.export import main

if __name__ == "__main__":
    raise SystemExit(main())
