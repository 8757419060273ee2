"""`tada predict VIDEO... --cfg CFG --checkpoint CKPT`: the top-5 classes of each video, by name.

Each video goes through the same test pipeline as `tada test` (decode, the config's temporal
views and spatial crops, normalisation), the views are aggregated with DATA.ENSEMBLE_METHOD, and
the top classes are printed with their averaged score. Class names come from ``--classes``, else
DATA.CLASS_NAMES_FILE, else the synthetic dataset's classes.txt in DATA.ANNO_DIR; without any,
class ids are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tada.config import Config, load_config
from tada.engine.distributed import EngineError
from tada.predictor import is_url

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
    # Videos are positional, so the overrides ride on --cfg: `--cfg FILE [KEY VALUE ...]`.
    parser.add_argument("--cfg", nargs="+", required=True, metavar="FILE",
                        help="YAML config, then optional config overrides (KEY VALUE pairs or KEY=VALUE)")


def _class_names(cfg: Config, given: str | None, *, backend: str) -> list[str] | None:
    """--classes, else the config's names (DATA.CLASS_NAMES_FILE, the synthetic classes.txt, the SSv2
    labels JSON), as `tada test` and `tada export` find them. With onnxruntime only --classes: the
    sidecar carries the names, and the count is checked against the model, not the config."""
    from tada.data import read_class_names
    from tada.export import resolve_class_names

    if backend == "onnxruntime":
        if not given:
            return None
        if not Path(given).is_file():
            raise EngineError(f"class names file not found: {given}")
        return read_class_names(given)
    return resolve_class_names(cfg, given or "")


def build_predictor(cfg: Config, args: argparse.Namespace) -> Any:
    """The :class:`tada.Predictor` the flags describe (loaded once for every video of the call)."""
    from tada.predictor import PredictionError, Predictor

    names = _class_names(cfg, args.classes, backend=args.backend)
    common = dict(views=_parse_views(args.views), batch_size=args.batch_size)
    try:
        if args.backend == "onnxruntime":
            if args.precision != "fp32":
                raise EngineError(f"--precision {args.precision}: an ONNX model runs in the precision it was exported in")
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
