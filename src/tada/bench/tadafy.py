"""A tadafied 2-D ResNet against the same 2-D network averaged over frames, on the synthetic time-reversal data.

Trains ``configs/projects/tada/synthetic/tadafy_resnet10.yaml`` (resnet10_w16 with its 3x3 convs made
TAdaConvs) and ``frames_resnet10.yaml`` (the same network, data, schedule and seed, no conv converted)
from scratch through the real engine for each seed, and prints their multi-view test top-1 and the gap::

    tada synth --out output/synthetic
    python -m tada.bench.tadafy --seeds 0,1,2 --out output/tadafy_synthetic

Finished runs are reused (the engine auto-resumes an OUTPUT_DIR). Times are wall-clock seconds of
each training plus its tests, on this machine as it is (other jobs included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tada.config import packaged_config_dir

CONFIGS = packaged_config_dir() / "projects" / "tada" / "synthetic"
RUNS = (("tadafied", "tadafy_resnet10.yaml"), ("frame average", "frames_resnet10.yaml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--out", default="output/tadafy_synthetic", help="output folder")
    parser.add_argument("--data", default="output/synthetic", help="the synthetic dataset (tada synth --out ...)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="overrides for both runs")
    args = parser.parse_args(argv)

    from tada import cli

    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = {"seed": seed}
        for name, config in RUNS:
            out = Path(args.out) / f"{Path(config).stem}_seed{seed}"
            started = time.perf_counter()
            code = cli.main(["train", "--cfg", str(CONFIGS / config), "RANDOM_SEED", str(seed), "OUTPUT_DIR", str(out),
                             "DATA.DATA_ROOT_DIR", args.data, "DATA.ANNO_DIR", args.data, *args.opts])
            if code != 0:
                raise SystemExit(f"{name} seed {seed} failed (exit {code}); see {out}")
            results = json.loads((out / "results.json").read_text())
            row[name] = {"top1": results["top1"], "seconds": time.perf_counter() - started}
        row["gap"] = row["tadafied"]["top1"] - row["frame average"]["top1"]
        rows.append(row)
        print(json.dumps(row))
    print("\n| seed | tadafied top-1 | frame average top-1 | gap | seconds (tadafied / frame average) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['tadafied']['top1']:.1f} | {r['frame average']['top1']:.1f} | {r['gap']:+.1f} | "
              f"{r['tadafied']['seconds']:.0f} / {r['frame average']['seconds']:.0f} |")
    (Path(args.out) / "summary.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
