"""`tada export --cfg CFG --checkpoint CKPT --output PATH [KEY VALUE ...]`: see :mod:`tada.deploy.export`."""

from __future__ import annotations

import argparse

from tada.cli import add_cfg_arguments
from tada.config import load_config
from tada.deploy.export import DEFAULT_OPSET, FORMATS, ONNX_EXPORTERS, export_from_config
from tada.deploy.serving import INSTALL_HINT

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="trained checkpoint (ours, official .pyth or a bare state dict)")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx",
                        help="onnx (onnxruntime, any ONNX runtime) or exported-program (torch.export .pt2)")
    parser.add_argument("--output", required=True, metavar="PATH", help="model file (.onnx or .pt2); "
                        "the sidecar is written next to it as PATH.json")
    parser.add_argument("--dynamic-batch", action="store_true", help="free batch dimension (else --batch exactly)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of a static-batch export (default 1)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= 17 (default {DEFAULT_OPSET})")
    parser.add_argument("--exporter", choices=ONNX_EXPORTERS, default="auto",
                        help="ONNX exporter: dynamo (torch.export-based, needs onnxscript; opset >= 18) or the legacy "
                             "torchscript one; auto (default) picks dynamo for opset >= 18, else torchscript")
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                        help="keep BatchNorm layers instead of folding them into the preceding convs")
    parser.add_argument("--class-names", default="", metavar="FILE",
                        help="class names file (one per line, or SSv2 labels JSON); default DATA.CLASS_NAMES_FILE")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip running the written file against the eager model")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max |logit difference| allowed, times (1 + |logit|) (default 1e-4)")
    add_cfg_arguments(parser)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.cfg, overrides=args.opts)
    report = export_from_config(
        cfg, checkpoint=args.checkpoint, fmt=args.fmt, output=args.output, cfg_path=str(args.cfg),
        class_names_file=args.class_names, batch=args.batch, dynamic_batch=args.dynamic_batch, opset=args.opset,
        exporter=args.exporter, fold_bn=args.fold_bn, verify=args.verify, tolerance=args.tolerance,
    )
    shape = "(" + ", ".join("B" if v is None else str(v) for v in report.input_shape) + ")"
    print(f"wrote {report.path} ({report.format}, input {shape}, {report.export_seconds:.1f} s)")
    print(f"wrote {report.sidecar}")
    if report.checked_batches:
        print(f"verified: max |logit difference| vs eager {report.max_abs_diff:.2e} "
              f"on batches {report.checked_batches}")
    if report.format == "onnx":
        print(f"run it: tada predict VIDEO... --backend onnxruntime --checkpoint {report.path} --cfg CFG"
              f"  (needs {INSTALL_HINT})")
    return 0
