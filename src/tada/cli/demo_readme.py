"""The README section `tada demo --readme README.md` writes: the demo's own results, for one or more seeds.

Everything between the README's ``<!-- DEMO-RESULTS -->`` markers is replaced; the figures of the
first seed (training curves, confusion matrices, what a TAdaConv sees) are copied under
``docs/demo/`` next to the README, so that the published numbers and pictures are the demo's own.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

from tada.errors import TadaError
from tada.fileio import atomic_open

__all__ = ["FIGURES", "README_END", "README_START", "readme_markers", "seeds_table", "write_readme_section"]

README_START, README_END = "<!-- DEMO-RESULTS -->", "<!-- /DEMO-RESULTS -->"
FIGURES = ("calibration.png", "curves.png", "confusion.png")


def readme_markers(readme: Path) -> str:
    """The README's text, checked for the markers the demo writes between."""
    try:
        text = readme.read_text()
    except OSError as err:
        raise TadaError(f"--readme {readme}: cannot read it ({err.strerror or err})") from None
    if README_START not in text or README_END not in text:
        raise TadaError(f"{readme}: no '{README_START}' ... '{README_END}' markers to write the demo results into")
    return text


def seeds_table(reports: list[dict]) -> str:
    """One row per seed: both top-1s, the gap, test videos with non-finite logits, train times."""
    header = ("| seed | TSN top-1 | TAda2D top-1 | TAda2D - TSN | non-finite test videos (TSN / TAda2D) "
              "| train time (TSN / TAda2D) |")
    rows = [header, "|---|---|---|---|---|---|"]
    for report in reports:
        tsn, tada = report["runs"]
        rows.append(f"| {report['seed']} | {tsn['top1']:.1f} | {tada['top1']:.1f} | {report['gap_top1']:+.1f} | "
                    f"{tsn['nonfinite']} / {tada['nonfinite']} | {tsn['train_seconds']:.0f} s / "
                    f"{tada['train_seconds']:.0f} s |")
    return "\n".join(rows)


def write_readme_section(readme: Path, reports: list[dict], *, total_seconds: float, command: str) -> None:
    """Rewrite the README's demo section from these per-seed reports (the first one's figures shown)."""
    text = readme_markers(readme)
    first = reports[0]
    images = readme.parent / "docs" / "demo"
    images.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        shutil.copyfile(Path(first["out"]) / name, images / name)
    section = f"{README_START}\n{_section(reports, total_seconds=total_seconds, command=command)}\n{README_END}"
    start = text.index(README_START)
    end = text.index(README_END) + len(README_END)
    with atomic_open(readme) as fh:
        fh.write(text[:start] + section + text[end:])
    print(f"[demo] wrote the results into {readme} and {images}")


def _section(reports: list[dict], *, total_seconds: float, command: str) -> str:
    import torch

    first = reports[0]
    tsn, tada = first["runs"]
    manifest = first["dataset"]["manifest"]
    counts = manifest["counts"]
    how = ("trained at the same time, one thread each" if first.get("concurrent")
           else f"trained one after the other, {torch.get_num_threads()} threads")
    seeds = ""
    if len(reports) > 1:
        seeds = (f"\n\nEvery seed (each also draws its own dataset); TAda2D - TSN from "
                 f"{min(r['gap_top1'] for r in reports):+.1f} to {max(r['gap_top1'] for r in reports):+.1f} "
                 f"points:\n\n{seeds_table(reports)}")
    return f"""## The demo: TAda2D learns what a frame-order-blind network cannot

`make demo` (= `tada demo`) generates a synthetic dataset of real H.264 videos
({len(manifest["classes"])} classes, {counts["train"]} train / {counts["val"]} val /
{counts["test"]} test videos): three **time-reversal pairs** whose videos are each other's played backwards
(grows / shrinks, fades in / fades out, turns red to blue / blue to red) and one appearance-only class. It
then trains a quarter-width TAda2D-R50 and a TSN (the same network with a plain frame-wise bottleneck) with
the same data, schedule and seed, through the real engine (`configs/projects/tada/synthetic/{{tada2d,tsn}}.yaml`,
runnable with `python runs/run.py --cfg ...`), and tests both with {first.get("protocol", "the multi-view")} views.
Seed {first["seed"]} ({platform.machine()}, torch {torch.__version__}, {how}):

{first["table"]}

TAda2D - TSN: **{first["gap_top1"]:+.1f} points of top-1**. Inside each time-reversal pair TSN is at
{tsn["within_pair"]:.1f}% (chance is 50%: averaging frames, it cannot tell a video from its reversal), TAda2D
at {tada["within_pair"]:.1f}%.{_overflow_note(tsn, tada)}{seeds}

Dataset generation took {first["dataset"]["seconds"]:.0f} s (cached afterwards)
and the whole demo {_demo_time(reports, total_seconds)}.

### What a TAdaConv sees

{_calibration_caption(first.get("calibration"))}

![what a TAdaConv sees](docs/demo/calibration.png)

![training curves](docs/demo/curves.png)
![confusion matrices](docs/demo/confusion.png)

This section is written by the demo itself: `{command}`."""


def _calibration_caption(figure: dict | None) -> str:
    if not figure:
        return "The figure below comes from the demo's first seed."
    tada, tsn = figure["tada2d"], figure["tsn"]
    follows = ("and so is the prediction" if tada["video"]["class"] != tada["reversed"]["class"]
               else "though here both clips still get the same class")
    return (
        f"One test video of the class *{figure['label']}* and its exact time-reversal (the same frames, "
        f"backwards), through both trained models. Left: TAda2D's calibration weights alpha in "
        f"`{figure['block']}` over the clip's frames, for the three channels that depend most on frame "
        f"order, and their per-frame mean over all channels: the same picture is calibrated differently "
        f"when its neighbours come in the other order, {follows} (video: "
        f"{_said(tada['video'])}, reversed: {_said(tada['reversed'])}). Right: TSN's per-frame "
        f"features of the reversal are the video's in reverse order; their clip average, which its head "
        f"classifies, is the same, and so is its prediction (video: {_said(tsn['video'])}, reversed: "
        f"{_said(tsn['reversed'])})."
    )


def _said(prediction: dict) -> str:
    return f"{prediction['class']} {100 * prediction['prob']:.0f}%"


def _overflow_note(tsn: dict, tada: dict) -> str:
    """A sentence when some test videos gave non-finite logits (they count as wrong)."""
    if not tsn["nonfinite"] and not tada["nonfinite"]:
        return ""
    return (f" On {tada['nonfinite']} test videos TAda2D's logits overflowed in eval mode (TSN: {tsn['nonfinite']});"
            f" they count as wrong.")


def _demo_time(reports: list[dict], total_seconds: float) -> str:
    reused = sorted({f"{name} (seed {r['seed']})" for r in reports for name in r["reused_runs"]})
    if reused:
        return f"(this call reused the finished runs {', '.join(reused)}; see their train times)"
    if len(reports) == 1:
        return f"{total_seconds / 60:.1f} minutes"
    return (f"{reports[0]['demo_seconds'] / 60:.1f} minutes for seed {reports[0]['seed']} "
            f"({total_seconds / 60:.1f} minutes for all {len(reports)} seeds)")
