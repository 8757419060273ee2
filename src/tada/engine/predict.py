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
import tempfile
from pathlib import Path
from typing import Any

import torch

from tada.config import Config, load_config
from tada.engine.distributed import EngineError

__all__ = ["add_arguments", "predict_videos", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files")
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


@torch.no_grad()
def predict_videos(
    cfg: Config,
    videos: list[str],
    *,
    checkpoint: str,
    views: tuple[int, int] | None = None,
    class_names: list[str] | None = None,
    topk: int = 5,
    device: str | None = None,
    backend: str = "torch",
) -> list[dict[str, Any]]:
    """One dict per video: ``path`` and ``top`` (list of {id, name, score}) or ``error``."""
    from tada.checkpoint import load_checkpoint
    from tada.config_schema import TEST_KEY_PREFIXES, multi_view_protocol, require_implemented
    from tada.data import build_dataset
    from tada.engine.metrics import AGGREGATIONS, aggregate_views
    from tada.models import build_model

    for v in videos:
        if not Path(v).is_file():
            raise EngineError(f"video not found: {v}" + (" (a folder)" if Path(v).is_dir() else ""))
    if not Path(checkpoint).is_file():
        raise EngineError(f"checkpoint not found: {checkpoint}" + (" (a folder)" if Path(checkpoint).is_dir() else ""))
    if topk < 1:
        raise EngineError(f"--topk must be >= 1, got {topk}")
    require_implemented(cfg, TEST_KEY_PREFIXES, EngineError)
    if backend == "onnxruntime":  # an exported model; its sidecar fixes frames, sampling, crop, mean/std
        from tada.serving import onnx_backend

        model, cfg = onnx_backend(cfg, checkpoint)
        dev = torch.device("cpu")
        class_names = class_names or model.class_names
        if class_names is not None and len(class_names) != cfg.VIDEO.HEAD.NUM_CLASSES:
            raise EngineError(f"{len(class_names)} class names for a model with {cfg.VIDEO.HEAD.NUM_CLASSES} classes")
    else:
        if backend == "torch" and Path(checkpoint).suffix == ".onnx":
            raise EngineError(f"{checkpoint} is an ONNX model: pass --backend onnxruntime")
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"--device {device}: CUDA is not available here (use --device cpu)")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = build_model(cfg).to(dev)
        load_checkpoint(model, checkpoint, strict=True)
        model.eval()
    # The test protocol: the multi-view one (10x3 K400, 2x3 SSv2) when the config runs it automatically.
    if views is None:
        multi = cfg.TEST.AUTOMATIC_MULTI_SCALE_TEST or backend == "onnxruntime"
        views = multi_view_protocol(cfg) if multi else (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS)
    clips, crops = int(views[0]), int(views[1])
    if clips < 1 or crops not in (1, 3):
        raise EngineError(f"views must be >= 1 clips x 1 or 3 crops, got {clips}x{crops}")
    static_batch = getattr(model, "input_shape", (None,))[0]  # an ONNX model exported with --batch
    method = cfg.DATA.ENSEMBLE_METHOD
    with tempfile.TemporaryDirectory(prefix="tada_predict_") as tmp:
        listing = Path(tmp) / "videos.txt"
        listing.write_text("".join(f"{Path(v).resolve()} 0\n" for v in videos))
        pcfg = cfg.with_overrides({
            "TEST.DATASET": "list", "DATA.TEST_LIST": str(listing), "DATA.DATA_ROOT_DIR": "/",
            "DATA.CLASS_NAMES_FILE": "", "TEST.NUM_ENSEMBLE_VIEWS": clips, "TEST.NUM_SPATIAL_CROPS": crops,
            # the given files are videos, decoded and resized on the CPU, whatever the training used
            "DATA.FORMAT": "video", "AUGMENTATION.USE_GPU": False,
        })
        dataset = build_dataset(pcfg, "test")
        out = []
        n = dataset.num_views
        for video_index, path in enumerate(videos):
            items = []
            for v in range(n):  # a video that fails stops at its first view: one warning, not one per view
                items.append(dataset[video_index * n + v])
                if items[-1]["failed"]:
                    break
            if items[-1]["failed"]:
                out.append({"path": path, "error": items[-1]["error"]})
                continue
            batch = torch.stack([it["video"] for it in items]).to(dev)
            pad = (-len(items)) % static_batch if static_batch else 0
            if pad:  # a static-batch export takes multiples of its batch: repeat the last view, drop it after
                batch = torch.cat([batch, batch[-1:].expand(pad, *batch.shape[1:])])
            scores = aggregate_views(model(batch)[: len(items)].float(), method)
            agg = scores.max(0).values if AGGREGATIONS[method] == "max" else scores.mean(0)
            k = min(topk, agg.numel())
            values, ids = agg.topk(k)
            out.append({
                "path": path,
                "views": f"{clips}x{crops}",
                "top": [{"id": int(i), "name": class_names[int(i)] if class_names else str(int(i)),
                         "score": float(s)} for s, i in zip(values.tolist(), ids.tolist())],
            })
    return out


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
    names = _class_names(cfg, args.classes, backend=args.backend)
    results = predict_videos(cfg, args.videos, checkpoint=args.checkpoint, views=_parse_views(args.views),
                             class_names=names, topk=args.topk, device=args.device, backend=args.backend)
    failed = 0
    for r in results:
        if args.json:
            print(json.dumps(r))
            failed += "error" in r
            continue
        print(f"{r['path']}" + (f"  ({r['views']} views)" if "views" in r else ""))
        if "error" in r:
            failed += 1
            print(f"  cannot decode: {r['error']}")
            continue
        for rank, t in enumerate(r["top"], 1):
            print(f"  {rank}. {t['name']} ({t['id']})  {t['score']:.4f}")
    named = any(t["name"] != str(t["id"]) for r in results for t in r.get("top", []))
    if not named and not args.json and any("top" in r for r in results):
        print("(no class names: pass --classes FILE or set DATA.CLASS_NAMES_FILE)", file=sys.stderr)
    return 1 if failed else 0
