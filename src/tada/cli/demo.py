"""`tada demo`: TAda2D against TSN on the synthetic dataset, on a laptop CPU.

It generates (or reuses) the synthetic video dataset, trains the two ordinary configs
``configs/projects/tada/synthetic/{tsn,tada2d}.yaml`` through the same code path as
``runs/run.py`` (real decoding, augmentation, SGD schedule, checkpoints, multi-view test), then
compares them: overall accuracy, accuracy on the time-reversal classes and on the appearance-only
classes, accuracy inside each time-reversal pair, params, GMACs and train time. Everything lands in
one output folder; re-running reuses finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tada.config import Config, load_config, packaged_config_dir
from tada.errors import TadaError
from tada.fileio import atomic_open

CONFIG_DIR = packaged_config_dir() / "projects" / "tada" / "synthetic"
RUNS = (("TSN", "tsn.yaml"), ("TAda2D", "tada2d.yaml"))


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
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset and of both trainings")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers per run")
    parser.add_argument(
        "--videos-per-class", default=None, metavar="TRAIN,VAL,TEST",
        help="synthetic videos per class and split (default 60,20,30)",
    )
    parser.add_argument(
        "--readme", default=None, metavar="README.md",
        help="also rewrite the demo section of this README (between its DEMO-RESULTS markers) and copy "
             "the plots next to it under docs/demo/",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides applied to both runs (e.g. OPTIMIZER.MAX_EPOCH 6)",
    )


def run(args: argparse.Namespace) -> int:
    from tada.data import synthetic

    if args.readme:  # before minutes of training, not after
        _readme_markers(Path(args.readme))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data_dir = out / "data"
    t0 = time.perf_counter()
    manifest = synthetic.ensure_dataset(data_dir, seed=args.seed,
                                        videos_per_class=_split_counts(args.videos_per_class))
    data_seconds = time.perf_counter() - t0
    print(f"[demo] synthetic dataset: {data_dir} ({data_seconds:.1f} s)")

    summaries = []
    for name, filename in RUNS:
        summaries.append(_train_and_test(name, CONFIG_DIR / filename, out, data_dir, manifest, args))

    table = _table(summaries)
    print()
    print(table)
    total = time.perf_counter() - started
    report = {
        "runs": [_summary_dict(s) for s in summaries],
        "gap_top1": summaries[1].top1 - summaries[0].top1,
        # the generator's own time: a cached dataset costs nothing now but did once
        "dataset": {"dir": str(data_dir), "seconds": manifest.get("seconds", data_seconds), "manifest": manifest},
        "reused_runs": [s.name for s in summaries if s.reused],
        "demo_seconds": total,
    }
    (out / "comparison.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "comparison.md").write_text(table + "\n")
    _plot(summaries, manifest, out)
    if args.readme:
        _update_readme(Path(args.readme), report, table, out)
    print(f"\n[demo] TAda2D - TSN top-1: {report['gap_top1']:+.1f} points; whole demo {total:.0f} s")
    print(f"[demo] everything is in {out}")
    return 0


# ---------------------------------------------------------------------------------------------
def _split_counts(text: str | None) -> dict[str, int] | None:
    if text is None:
        return None
    try:
        train, val, test = (int(v) for v in text.split(","))
    except ValueError:
        raise TadaError(f"--videos-per-class expects TRAIN,VAL,TEST counts, got {text!r}") from None
    return {"train": train, "val": val, "test": test}


def _train_and_test(name: str, config: Path, out: Path, data_dir: Path, manifest: dict, args) -> RunSummary:
    from tada import cli
    from tada.bench.flops import count_model

    run_dir = out / name.lower()
    overrides = [
        "DATA.DATA_ROOT_DIR", str(data_dir), "DATA.ANNO_DIR", str(data_dir),
        "OUTPUT_DIR", str(run_dir), "RANDOM_SEED", str(args.seed),
        "VIDEO.HEAD.NUM_CLASSES", str(len(manifest["classes"])),
    ]
    if args.workers is not None:
        overrides += ["DATA_LOADER.NUM_WORKERS", str(args.workers)]
    overrides += list(args.opts or [])
    cfg = load_config(config, overrides)
    results_path = run_dir / "results.json"
    reused = results_path.is_file() and _same_config(run_dir, cfg) and _current_protocol(results_path)
    if reused:
        print(f"[demo] {name}: reusing the finished run in {run_dir}")
    else:
        print(f"[demo] {name}: training {config.name} -> {run_dir}")
        code = cli.main(["train", "--cfg", str(config), *overrides])
        if code != 0 or not results_path.is_file():
            raise TadaError(f"the {name} run failed (exit code {code}); see {run_dir}")
    results = json.loads(results_path.read_text())
    stats = count_model(cfg)
    summary = _summarise(name, results, manifest, stats, run_dir)
    summary.reused = reused
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
    fig.savefig(out / "curves.png", dpi=110)
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
    fig.savefig(out / "confusion.png", dpi=110)
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


README_START, README_END = "<!-- DEMO-RESULTS -->", "<!-- /DEMO-RESULTS -->"


def _readme_markers(readme: Path) -> str:
    """The README's text, checked for the markers the demo writes between."""
    try:
        text = readme.read_text()
    except OSError as err:
        raise TadaError(f"--readme {readme}: cannot read it ({err.strerror or err})") from None
    if README_START not in text or README_END not in text:
        raise TadaError(f"{readme}: no '{README_START}' ... '{README_END}' markers to write the demo results into")
    return text


def _update_readme(readme: Path, report: dict, table: str, out: Path) -> None:
    """Rewrite the README's demo section from this run, so the published figures are the demo's own."""
    import platform
    import shutil

    import torch

    text = _readme_markers(readme)
    images = readme.parent / "docs" / "demo"
    images.mkdir(parents=True, exist_ok=True)
    for name in ("curves.png", "confusion.png"):
        shutil.copyfile(out / name, images / name)
    tsn, tada = report["runs"]
    counts = report["dataset"]["manifest"]["counts"]
    section = f"""{README_START}
## The demo: TAda2D learns what a frame-order-blind network cannot

`make demo` (= `tada demo`) generates a synthetic dataset of real H.264 videos
({len(report["dataset"]["manifest"]["classes"])} classes, {counts["train"]} train / {counts["val"]} val /
{counts["test"]} test videos): three **time-reversal pairs** whose videos are each other's played backwards
(grows / shrinks, fades in / fades out, turns red to blue / blue to red) and one appearance-only class. It
then trains a quarter-width TAda2D-R50 and a TSN (the same network with a plain frame-wise bottleneck) with
the same data, schedule and seed, through the real engine (`configs/projects/tada/synthetic/{{tada2d,tsn}}.yaml`,
runnable with `python runs/run.py --cfg ...`), and tests both with 2x3 views. This run
({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}):

{table}

TAda2D - TSN: **{report["gap_top1"]:+.1f} points of top-1**. Inside each time-reversal pair TSN is at
{tsn["within_pair"]:.1f}% (chance is 50%: averaging frames, it cannot tell a video from its reversal), TAda2D
at {tada["within_pair"]:.1f}%.{_overflow_note(tsn, tada)}
Dataset generation took {report["dataset"]["seconds"]:.0f} s (cached afterwards)
and the whole demo {_demo_time(report)}.

![training curves](docs/demo/curves.png)
![confusion matrices](docs/demo/confusion.png)

This section is written by the demo itself: `tada demo --readme README.md`.
{README_END}"""
    start = text.index(README_START)
    end = text.index(README_END) + len(README_END)
    with atomic_open(readme) as fh:
        fh.write(text[:start] + section + text[end:])
    print(f"[demo] wrote the results into {readme} and {images}")


def _overflow_note(tsn: dict, tada: dict) -> str:
    """A sentence when some test videos gave non-finite logits (they count as wrong)."""
    if not tsn["nonfinite"] and not tada["nonfinite"]:
        return ""
    return (f" On {tada['nonfinite']} test videos TAda2D's logits overflowed in eval mode (TSN: {tsn['nonfinite']});"
            f" they count as wrong.")


def _demo_time(report: dict) -> str:
    if report["reused_runs"]:
        return f"(this call reused the finished runs {', '.join(report['reused_runs'])}; see their train times)"
    return f"{report['demo_seconds'] / 60:.1f} minutes"
