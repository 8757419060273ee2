"""`tada predict VIDEO... --cfg CFG --checkpoint CKPT`: the top-5 classes of each video, by name.

Each video goes through the same test pipeline as `tada test` (decode, the config's temporal
views and spatial crops, normalisation), the views are aggregated with DATA.ENSEMBLE_METHOD, and
the top classes are printed with their averaged score. Class names come from ``--classes``, else
DATA.CLASS_NAMES_FILE, else the synthetic dataset's classes.txt in DATA.ANNO_DIR; without any,
class ids are printed. A video that cannot be decoded, or whose scores are not finite, is listed
with its reason (``error`` in JSON) and the exit status is 1.

With ``--timeline`` each video is read as a stream and scored window by window (the config's
clip every ``--window-stride`` seconds, see :mod:`tada.data.windows`): start and end seconds and
the top classes of each window, printed or written to ``--output`` (.json or .csv). The model is
loaded once (:class:`tada.Predictor`) for all the videos of a call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tada.config import Config, load_config
from tada.deploy.predictor import is_url
from tada.engine.distributed import EngineError

__all__ = ["add_arguments", "build_predictor", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO",
                        help="video files, or URLs FFmpeg opens (http://..., rtsp://..., pipe:0)")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint (.pyth of ours or the official zoo), or with --backend onnxruntime an "
                             "exported .onnx model (`tada export`; its .json sidecar sets the input settings)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="torch (a checkpoint) or onnxruntime (an exported ONNX model, CPU; "
                             "pip install 'tada[export]')")
    parser.add_argument("--views", default=None, metavar="VxS",
                        help="temporal clips x spatial crops (default: the config's multi-view test protocol, "
                             "TEST.MULTI_VIEW_*: 10x3 for K400, 2x3 for SSv2; an ONNX sidecar's test_views)")
    parser.add_argument("--classes", default=None, help="class names file, one per line in label order")
    parser.add_argument("--topk", type=int, default=5, help="classes listed per video (default 5)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast precision of the torch model (default fp32)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="views (or windows) per model call (default: TEST.BATCH_SIZE)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per video instead")
    timeline = parser.add_argument_group("timelines (sliding windows over each video, read as a stream)")
    timeline.add_argument("--timeline", action="store_true",
                          help="score windows of the config's clip every --window-stride seconds instead of the "
                               "whole video")
    timeline.add_argument("--window-stride", type=float, default=None, metavar="SECONDS",
                          help="seconds between window starts (default: the window length)")
    timeline.add_argument("--window-seconds", type=float, default=None, metavar="SECONDS",
                          help="window length of a segment_based config (default 4); an interval_based window "
                               "is the config's clip, NUM_INPUT_FRAMES x SAMPLING_RATE frames at TARGET_FPS")
    timeline.add_argument("--smooth", type=int, default=0, metavar="N",
                          help="average each window's scores with N neighbours on each side (default 0)")
    timeline.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per window (default 1)")
    timeline.add_argument("--output", default=None, metavar="FILE.json|FILE.csv",
                          help="write the timelines to a JSON (a list, one object per video) or CSV file")
    # Videos are positional, so the overrides ride on --cfg: `--cfg FILE [KEY VALUE ...]`.
    parser.add_argument("--cfg", nargs="+", required=True, metavar="FILE",
                        help="YAML config, then optional config overrides (KEY VALUE pairs or KEY=VALUE)")


def _class_names(cfg: Config, given: str | None, *, backend: str) -> list[str] | None:
    """--classes, else the config's names (DATA.CLASS_NAMES_FILE, the synthetic classes.txt, the SSv2
    labels JSON), as `tada test` and `tada export` find them. With onnxruntime only --classes: the
    sidecar carries the names, and the count is checked against the model, not the config."""
    from tada.data import read_class_names
    from tada.deploy.export import resolve_class_names

    if backend == "onnxruntime":
        if not given:
            return None
        if not Path(given).is_file():
            raise EngineError(f"class names file not found: {given}")
        return read_class_names(given)
    return resolve_class_names(cfg, given or "")


def build_predictor(cfg: Config, args: argparse.Namespace) -> Any:
    """The :class:`tada.Predictor` the flags describe (loaded once for every video of the call)."""
    from tada.deploy.predictor import PredictionError, Predictor

    names = _class_names(cfg, args.classes, backend=args.backend)
    common = dict(views=_parse_views(args.views), batch_size=args.batch_size)
    try:
        if args.backend == "onnxruntime":
            if args.precision != "fp32":
                raise EngineError(
                    f"--precision {args.precision}: an ONNX model runs in the precision it was exported in")
            if not Path(args.checkpoint).is_file():
                raise EngineError(f"ONNX model not found: {args.checkpoint}")
            return Predictor.from_onnx(args.checkpoint, cfg=cfg, device=args.device, **common,
                                       **({"class_names": names} if names else {}))
        return Predictor(cfg, args.checkpoint, class_names=names, device=args.device, precision=args.precision,
                         **common)
    except PredictionError as err:
        raise EngineError(str(err)) from None


def _parse_views(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        clips, crops = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise EngineError(f"--views must look like 10x3, got {text!r}") from None
    return clips, crops


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.cfg[0], args.cfg[1:])
    for v in args.videos:
        if not Path(v).is_file() and not is_url(v):
            raise EngineError(f"video not found: {v}" + (" (a folder)" if Path(v).is_dir() else ""))
    if args.topk < 1:
        raise EngineError(f"--topk must be >= 1, got {args.topk}")
    predictor = build_predictor(cfg, args)
    if args.timeline:
        return run_timelines(predictor, args)
    if args.output or args.window_stride is not None or args.window_seconds is not None or args.smooth:
        raise EngineError("--output, --window-stride, --window-seconds and --smooth apply with --timeline")
    results = predictor.predict_many(args.videos, topk=args.topk)
    failed = sum("error" in r for r in results)
    for r in results:
        if args.json:
            print(json.dumps(r, allow_nan=False))
            continue
        print(f"{r['path']}" + (f"  ({r['views']} views)" if "views" in r else ""))
        if "error" in r:
            print(f"  failed: {r['error']}")
            continue
        for rank, t in enumerate(r["top"], 1):
            print(f"  {rank}. {t['label']} ({t['id']})  {t['score']:.4f}")
    if predictor.class_names is None and not args.json and failed < len(results):
        print("(no class names: pass --classes FILE or set DATA.CLASS_NAMES_FILE)", file=sys.stderr)
    return 1 if failed else 0


def _timeline(predictor: Any, video: str, args: argparse.Namespace) -> dict[str, Any]:
    from tada.data.decode import DecodeError

    try:
        return predictor.timeline(video, stride=args.window_stride, seconds=args.window_seconds, topk=args.topk,
                                  smooth=args.smooth, crops=args.crops)
    except DecodeError as exc:
        return {"path": video, "error": exc.reason, "windows": []}


def _timeline_rows(timeline: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows: one per window and rank (a failed window or video: one row with its error)."""
    if "error" in timeline:
        return [{"path": timeline["path"], "error": timeline["error"]}]
    rows = []
    for w in timeline["windows"]:
        span = {"path": timeline["path"], "start": w["start"], "end": w["end"]}
        if "error" in w:
            rows.append({**span, "error": w["error"]})
        for rank, t in enumerate(w.get("top", []), 1):
            rows.append({**span, "rank": rank, "id": t["id"], "label": t["label"], "score": t["score"]})
    return rows


def write_timelines(path: Path, timelines: list[dict[str, Any]]) -> None:
    """Timelines as JSON (a list, one object per video) or CSV (one row per window and rank), atomically."""
    import csv

    from tada.fileio import atomic_open

    with atomic_open(path) as fh:
        if path.suffix.lower() == ".json":
            json.dump(timelines, fh, indent=1, allow_nan=False)
            fh.write("\n")
            return
        writer = csv.DictWriter(fh, fieldnames=["path", "start", "end", "rank", "id", "label", "score", "error"])
        writer.writeheader()
        for timeline in timelines:
            writer.writerows(_timeline_rows(timeline))


def run_timelines(predictor: Any, args: argparse.Namespace) -> int:
    """`tada predict --timeline`: each video's windows, printed, or written to --output."""
    if args.views is not None:
        raise EngineError("--views sets the views of a whole-video prediction; a timeline window takes --crops")
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in (".json", ".csv"):
        raise EngineError(f"--output must end in .json or .csv, got {output}")
    timelines = []
    for video in args.videos:
        timeline = _timeline(predictor, video, args)
        timelines.append(timeline)
        if output is not None:
            continue
        if args.json:
            print(json.dumps(timeline, allow_nan=False))
            continue
        print(timeline["path"] + (f"  failed: {timeline['error']}" if "error" in timeline else ""))
        for w in timeline["windows"]:
            what = w["error"] if "error" in w else ", ".join(f"{t['label']} {t['score']:.3f}" for t in w["top"])
            print(f"  {w['start']:9.2f} - {w['end']:9.2f} s  {what}")
    if output is not None:
        write_timelines(output, timelines)
        print(f"wrote {output}")
    failed = sum("error" in t or any("error" in w for w in t["windows"]) for t in timelines)
    if failed:
        print(f"{failed} of {len(timelines)} videos have windows that could not be scored", file=sys.stderr)
    return 1 if failed else 0
