"""`tada demo`: TAda2D against TSN on the synthetic dataset, on a laptop CPU.

It generates (or reuses) the synthetic video dataset, trains the two ordinary configs
``configs/projects/tada/synthetic/{tsn,tada2d}.yaml`` through the same code path as
``runs/run.py`` (real decoding, augmentation, SGD schedule, checkpoints, multi-view test), then
compares them: overall accuracy, accuracy on the time-reversal classes and on the appearance-only
classes, accuracy inside each time-reversal pair, params, GMACs and train time, and draws what a
TAdaConv sees (:mod:`tada.viz.calibration`). Everything lands in one output folder (``--seeds``:
one ``seed_N`` folder per seed); re-running reuses finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tada.cli.demo_readme import README_END, README_START, readme_markers, seeds_table, write_readme_section
from tada.config import Config, load_config, packaged_config_dir
from tada.errors import TadaError
from tada.fileio import atomic_open

__all__ = ["README_END", "README_START", "add_arguments", "run"]

CONFIG_DIR = packaged_config_dir() / "projects" / "tada" / "synthetic"
RUNS = (("TSN", "tsn.yaml"), ("TAda2D", "tada2d.yaml"))
# Measured on a loaded 2-core machine (docs/design.md, "The demo's runs"): concurrent was faster.
CONCURRENT_BY_DEFAULT = True


@dataclass
class RunSummary:
    name: str
    top1: float
    top5: float
    reversal_top1: float
    appearance_top1: float
    within_pair: float
    params: int
    gmacs: float
    train_seconds: float
    results: dict
    output_dir: Path
    reused: bool = False
    nonfinite: int = 0  # test videos whose logits overflowed (counted as wrong)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="output/demo", help="output folder (default: output/demo)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="seed of the dataset and of both trainings")
    seeds.add_argument("--seeds", type=int, nargs="+", default=None, metavar="N",
                       help="several seeds, each into OUT/seed_N (its own dataset and runs), and a table of all")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers per run")
    parser.add_argument(
        "--concurrent", action=argparse.BooleanOptionalAction, default=CONCURRENT_BY_DEFAULT,
        help="train TSN and TAda2D at the same time as two processes with --threads-per-run threads and "
             f"no data-loader workers (unless --workers) (default: {'on' if CONCURRENT_BY_DEFAULT else 'off'})",
    )
    parser.add_argument("--threads-per-run", type=int, default=1, help="intra-op threads per concurrent run")
    parser.add_argument(
        "--single-view-test", action="store_true",
        help="also run the config's single-view test before the multi-view one (the demo reports only the "
             "multi-view test, so by default it skips the other)",
    )
    parser.add_argument(
        "--videos-per-class", default=None, metavar="TRAIN,VAL,TEST",
        help="synthetic videos per class and split (default 60,20,30)",
    )
    parser.add_argument(
        "--readme", default=None, metavar="README.md",
        help="also rewrite the demo section of this README (between its DEMO-RESULTS markers) and copy "
             "the first seed's plots next to it under docs/demo/",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides applied to both runs (e.g. OPTIMIZER.MAX_EPOCH 6)",
    )


def run(args: argparse.Namespace) -> int:
    seeds = _seeds(args)
    if args.threads_per_run < 1:
        raise TadaError(f"--threads-per-run must be >= 1, got {args.threads_per_run}")
    if args.readme:  # before minutes of training, not after
        readme_markers(Path(args.readme))
    out = Path(args.out).resolve()
    started = time.perf_counter()
    reports = [_run_seed(seed, out if len(seeds) == 1 else out / f"seed_{seed}", args) for seed in seeds]
    total = time.perf_counter() - started
    if len(seeds) > 1:
        table = seeds_table(reports)
        print(f"\n{table}")
        _write_text(out / "seeds.md", table + "\n")
        _write_text(out / "seeds.json", json.dumps({"seeds": reports, "demo_seconds": total}, indent=2, default=str))
        print(f"\n[demo] {len(seeds)} seeds in {total:.0f} s; everything is in {out}")
    if args.readme:
        write_readme_section(Path(args.readme), reports, total_seconds=total, command=_command(args))
    return 0


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def _seeds(args: argparse.Namespace) -> list[int]:
    seeds = [args.seed] if args.seeds is None else list(args.seeds)
    if len(set(seeds)) != len(seeds):
        raise TadaError(f"--seeds: each seed once, got {seeds}")
    return seeds


def _command(args: argparse.Namespace) -> str:
    if args.seeds:
        seeds = " --seeds " + " ".join(map(str, args.seeds))
    else:
        seeds = f" --seed {args.seed}" if args.seed else ""
    return f"tada demo{seeds} --readme README.md"


def _run_seed(seed: int, out: Path, args: argparse.Namespace) -> dict:
    """Dataset, both runs, their comparison and figures for one seed, in ``out``; returns the report."""
    from tada.data import synthetic
    from tada.viz.calibration import write_calibration_figure

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data_dir = out / "data"
    t0 = time.perf_counter()
    manifest = synthetic.ensure_dataset(data_dir, seed=seed, videos_per_class=_split_counts(args.videos_per_class))
    data_seconds = time.perf_counter() - t0
    print(f"[demo] synthetic dataset: {data_dir} ({data_seconds:.1f} s)")

    runs = [_prepare_run(name, CONFIG_DIR / filename, out, data_dir, manifest, seed, args) for name, filename in RUNS]
    t0 = time.perf_counter()
    concurrent = _train(runs, args)
    train_wall = time.perf_counter() - t0
    summaries = [_summarise_run(run, manifest) for run in runs]

    table = _table(summaries)
    print()
    print(table)
    _plot(summaries, manifest, out)
    figure = write_calibration_figure(tada_dir=summaries[1].output_dir, tsn_dir=summaries[0].output_dir,
                                      manifest=manifest, out=out / "calibration.png")
    total = time.perf_counter() - started
    report = {
        "seed": seed,
        "out": str(out),
        "runs": [_summary_dict(s) for s in summaries],
        "gap_top1": summaries[1].top1 - summaries[0].top1,
        "protocol": summaries[1].results.get("protocol"),
        "table": table,
        "calibration": figure.summary(),
        # the generator's own time: a cached dataset costs nothing now but did once
        "dataset": {"dir": str(data_dir), "seconds": manifest.get("seconds", data_seconds), "manifest": manifest},
        "reused_runs": [s.name for s in summaries if s.reused],
        "concurrent": concurrent,
        "train_wall_seconds": train_wall,
        "demo_seconds": total,
    }
    _write_text(out / "comparison.json", json.dumps(report, indent=2, default=str))
    _write_text(out / "comparison.md", table + "\n")
    print(f"\n[demo] seed {seed}: TAda2D - TSN top-1: {report['gap_top1']:+.1f} points; training "
          f"{train_wall:.0f} s ({'concurrent' if concurrent else 'in this process'}); whole demo {total:.0f} s")
    print(f"[demo] everything is in {out}")
    return report


# ---------------------------------------------------------------------------------------------
def _split_counts(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    try:
        train, val, test = (int(v) for v in text.split(","))
    except ValueError:
        raise TadaError(f"--videos-per-class expects TRAIN,VAL,TEST counts, got {text!r}") from None
    return {"train": train, "val": val, "test": test}


@dataclass
class _Run:
    name: str
    config: Path
    overrides: list[str]
    cfg: Config
    output_dir: Path
    reused: bool


def _prepare_run(name: str, config: Path, out: Path, data_dir: Path, manifest: dict, seed: int, args) -> _Run:
    """The run's overrides and resolved config, and whether a finished run with that config is there."""
    run_dir = out / name.lower()
    overrides = [
        "DATA.DATA_ROOT_DIR", str(data_dir), "DATA.ANNO_DIR", str(data_dir),
        "OUTPUT_DIR", str(run_dir), "RANDOM_SEED", str(seed),
        "VIDEO.HEAD.NUM_CLASSES", str(len(manifest["classes"])),
    ]
    if args.workers is not None:
        overrides += ["DATA_LOADER.NUM_WORKERS", str(args.workers)]
    elif args.concurrent:
        overrides += ["DATA_LOADER.NUM_WORKERS", "0"]
    overrides += list(args.opts or [])
    cfg = load_config(config, overrides)
    if not args.single_view_test:
        overrides += _multi_view_only(cfg)
        cfg = load_config(config, overrides)
    results_path = run_dir / "results.json"
    reused = results_path.is_file() and _same_config(run_dir, cfg) and _current_protocol(results_path)
    return _Run(name, config, overrides, cfg, run_dir, reused)


def _multi_view_only(cfg: Config) -> list[str]:
    """Overrides that make the config's own test the multi-view one, when that is the test the demo reports.

    `tada train` tests with TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS, then (with
    TEST.AUTOMATIC_MULTI_SCALE_TEST) with the multi-view protocol, and results.json holds the last
    test; a protocol equal to the first is not repeated. The demo reads only results.json.
    """
    from tada.config.schema import multi_view_protocol

    if not cfg.TEST.AUTOMATIC_MULTI_SCALE_TEST:
        return []
    views, crops = multi_view_protocol(cfg)
    return ["TEST.NUM_ENSEMBLE_VIEWS", str(views), "TEST.NUM_SPATIAL_CROPS", str(crops)]


def _train(runs: list[_Run], args) -> bool:
    """Train (and test) the runs not finished yet: one after the other in this process, or concurrently
    (returns True for the latter)."""
    from tada import cli
    from tada.cli.concurrent_train import TrainJob, tada_command, train_concurrently

    for run in runs:
        print(f"[demo] {run.name}: reusing the finished run in {run.output_dir}" if run.reused
              else f"[demo] {run.name}: training {run.config.name} -> {run.output_dir}")
    todo = [run for run in runs if not run.reused]
    concurrent = args.concurrent and len(todo) > 1
    if concurrent:
        print(f"[demo] training {' and '.join(r.name for r in todo)} at the same time, {args.threads_per_run} "
              f"thread(s) each; their output is also in each run's console.log")
        train_concurrently([TrainJob(r.name, tada_command(["train", "--cfg", str(r.config), *r.overrides]),
                                     r.output_dir) for r in todo], threads=args.threads_per_run)
    else:
        for run in todo:
            code = cli.main(["train", "--cfg", str(run.config), *run.overrides])
            if code != 0:
                raise TadaError(f"the {run.name} run failed (exit code {code}); see {run.output_dir}")
    for run in todo:
        if not (run.output_dir / "results.json").is_file():
            raise TadaError(f"the {run.name} run wrote no results.json; see {run.output_dir}")
    return concurrent


def _summarise_run(run: _Run, manifest: dict) -> RunSummary:
    from tada.models.flops import count_model

    results = json.loads((run.output_dir / "results.json").read_text())
    summary = _summarise(run.name, results, manifest, count_model(run.cfg), run.output_dir)
    summary.reused = run.reused
    return summary


def _current_protocol(results_path: Path) -> bool:
    """Results tested the way this tada tests (else `tada train` re-tests the finished run)."""
    from tada.engine.evaluate import tested_as_now

    return tested_as_now(json.loads(results_path.read_text()))


def _same_config(run_dir: Path, cfg: Config) -> bool:
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return False
    return load_config(saved) == cfg


def _summarise(name: str, results: dict, manifest: dict, stats: dict, run_dir: Path) -> RunSummary:
    confusion = np.asarray(results["confusion_matrix"], dtype=np.int64)
    # One more column: videos with non-finite scores, wrong answers that predicted no class.
    unranked = np.zeros((len(confusion), 1), dtype=np.int64)
    for video in results.get("nonfinite_videos", []):
        unranked[video["label"], 0] += 1
    confusion = np.concatenate([confusion, unranked], axis=1)
    pairs = [tuple(p) for p in manifest["pairs"]]
    reversal = sorted({c for p in pairs for c in p})
    appearance = list(manifest["appearance_classes"])
    return RunSummary(
        name=name,
        top1=float(results["top1"]),
        top5=float(results["top5"]),
        reversal_top1=_accuracy_on(confusion, reversal),
        appearance_top1=_accuracy_on(confusion, appearance),
        within_pair=_within_pair_accuracy(confusion, pairs),
        params=int(stats["params"]),
        gmacs=float(stats["gmacs"]),
        train_seconds=float(results.get("train_seconds", float("nan"))),
        results=results,
        output_dir=run_dir,
        nonfinite=len(results.get("nonfinite_videos", [])),
    )


def _accuracy_on(confusion: np.ndarray, classes: list[int]) -> float:
    """Top-1 (%) over the videos whose true class is in ``classes``."""
    rows = confusion[classes]
    total = rows.sum()
    return float(100.0 * sum(confusion[c, c] for c in classes) / total) if total else float("nan")


def _within_pair_accuracy(confusion: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """Of the videos predicted as one of their own pair's two classes, the share in the right one.

    A model blind to frame order sits at 50% here whatever its appearance skills.
    """
    right = wrong = 0
    for a, b in pairs:
        right += confusion[a, a] + confusion[b, b]
        wrong += confusion[a, b] + confusion[b, a]
    return float(100.0 * right / (right + wrong)) if right + wrong else float("nan")


def _summary_dict(s: RunSummary) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in s.__dict__.items() if k != "results"}


def _table(summaries: list[RunSummary]) -> str:
    header = ("| model | top-1 | top-5 | time-reversal classes | appearance classes | within a pair "
              "| params | GMACs/view | train time |")
    rule = "|---|---|---|---|---|---|---|---|---|"
    rows = [
        f"| {s.name} | {s.top1:.1f} | {s.top5:.1f} | {s.reversal_top1:.1f} | {s.appearance_top1:.1f} | "
        f"{s.within_pair:.1f} | {s.params / 1e6:.2f} M | {s.gmacs:.3f} | {s.train_seconds:.0f} s |"
        for s in summaries
    ]
    return "\n".join([header, rule, *rows])


def _plot(summaries: list[RunSummary], manifest: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for s in summaries:
        epochs, loss, val = _curves(s.output_dir)
        axes[0].plot(epochs, loss, marker="o", label=s.name)
        if val:
            axes[1].plot(*zip(*val), marker="o", label=s.name)
    axes[0].set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    axes[1].set(title="validation top-1 (single view)", xlabel="epoch", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_open(out / "curves.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)

    names = manifest["classes"]
    fig, axes = plt.subplots(1, len(summaries), figsize=(6 * len(summaries), 5.2))
    for ax, s in zip(np.atleast_1d(axes), summaries):
        cm = np.asarray(s.results["confusion_matrix"], dtype=float)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{s.name}: top-1 {s.top1:.1f}%")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i in range(len(names)):
            for j in range(len(names)):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_open(out / "confusion.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def _curves(run_dir: Path) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """Per-epoch training loss and validation top-1 from the run's stats.jsonl."""
    epochs, loss, val = [], [], []
    path = run_dir / "stats.jsonl"
    if not path.is_file():
        return epochs, loss, val
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("_type") == "train_epoch":
            epochs.append(rec["epoch"])
            loss.append(rec["loss"])
        elif rec.get("_type") == "val_epoch":
            val.append((rec["epoch"], rec["top1"]))
    return epochs, loss, val
