"""Export a video model to ONNX or a ``torch.export`` program, with a sidecar that says how to feed it.

TAda2D exports with static weights because its TAdaConv is a plain convolution on a per-frame
scaled input: the graph is convs, BN, pools and elementwise ops, nothing data-dependent.
The exported model takes a float clip batch (B, 3, T, H, W), normalised, and returns logits
(B, num_classes). ``<output>.json`` (see :mod:`tada.deploy.serving`) records frames, sampling, test scale
and crop, mean/std and class names, so the file is never separated from its preprocessing.

Every export is verified before it is reported: the written file is loaded back and run on random
clips (at two batch sizes when the batch is dynamic) and its logits are compared with the eager
model; a difference above the tolerance is an error, not a warning.

Command line::

    tada export --cfg CFG --checkpoint CKPT --format onnx --output tada2d.onnx --dynamic-batch [KEY VALUE ...]
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import tada
from tada.config.schema import multi_view_protocol
from tada.deploy.serving import SIDECAR_VERSION, read_sidecar, require, write_sidecar
from tada.errors import TadaError
from tada.fileio import file_sha256

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "ONNX_EXPORTERS",
    "ExportError",
    "ExportReport",
    "export_from_config",
    "export_model",
    "fold_batchnorm",
    "prepare_for_export",
    "resolve_class_names",
]

FORMATS = ("onnx", "exported-program")
ONNX_EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18  # the torch.export-based exporter's own opset; >= 17 as the issue asks
_SUFFIX = {"onnx": ".onnx", "exported-program": ".pt2"}
_MAX_BATCH = 4096


class ExportError(TadaError, ValueError):
    """Bad export arguments or an export that does not reproduce the eager model."""


@dataclass
class ExportReport:
    """What an export wrote and how closely the written model matches the eager one."""

    path: Path
    sidecar: Path | None
    format: str
    input_shape: list[int | None]
    max_abs_diff: float
    checked_batches: list[int]
    export_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# Preparing the model
# ------------------------------------------------------------------------------------------------
def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode BN into the frame conv that feeds it, in place; returns the number folded.

    A pair is a child ``X_bn`` (BatchNorm) next to a sibling ``X`` that is a frame conv with a
    4-D or 5-D weight and an optional bias, and the block computes ``X_bn(X(.))`` (the official
    naming: ``a``/``a_bn``, ``c``/``c_bn``, ``short_cut``/``short_cut_bn``, the stem's ``a``/``a_bn``
    and TSN's ``b``/``b_bn``). TAdaConv's ``b_bn`` is not folded: the temporal pool branch reads the
    conv output before that BN. Legal only for inference with fixed statistics.
    """
    from tada.models.layers import FrameConv

    folded = 0
    for owner in list(model.modules()):
        for name, bn in list(owner.named_children()):
            if not (name.endswith("_bn") and isinstance(bn, nn.modules.batchnorm._BatchNorm)):
                continue
            conv = getattr(owner, name[: -len("_bn")], None)
            if not isinstance(conv, FrameConv):
                continue
            if bn.training:
                raise ValueError("fold_batchnorm needs an eval-mode model (call model.eval() first)")
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias.detach() - bn.running_mean * scale
            weight = conv.weight.detach() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
            bias = shift if conv.bias is None else conv.bias.detach() * scale + shift
            conv.weight = nn.Parameter(weight, requires_grad=False)
            if conv.bias is None:
                delattr(conv, "bias")  # a plain None attribute; register the parameter instead
            conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(owner, name, nn.Identity())
            folded += 1
    return folded


def prepare_for_export(model: nn.Module, *, fold_bn: bool = True) -> nn.Module:
    """A frozen eval-mode copy for export: NCHW frames (layout is the runtime's business), BN folded
    into the frame convs.

    The model's own modules are exported: the ops whose eager form records badly (the temporal
    pool's shifted adds, the routing function's unfold) switch to their export formulation while a
    graph is recorded (:func:`tada.ops.primitives.is_exporting`). The caller's model is left untouched.
    """
    prepared = copy.deepcopy(model).eval()
    for p in prepared.parameters():
        p.requires_grad_(False)
    if hasattr(prepared, "channels_last"):
        prepared.channels_last = False
    if fold_bn:
        fold_batchnorm(prepared)
    return prepared


def _example(shape: Sequence[int], seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen)


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' chatter that says nothing about this model (tracer notes, torchvision ops)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration",)]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*",
                                category=DeprecationWarning)
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def _export_onnx(model: nn.Module, path: Path, example: Tensor, *, dynamic_batch: bool, opset: int,
                 exporter: str) -> None:
    require("onnx")
    if exporter == "dynamo":
        require("onnxscript")
        dynamic = ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},) if dynamic_batch else None
        with _quiet_export():
            torch.onnx.export(
                model, (example,), str(path), dynamo=True, opset_version=opset, input_names=["video"],
                output_names=["logits"], dynamic_shapes=dynamic, external_data=False, optimize=True, verbose=False,
            )
    elif exporter == "torchscript":
        axes = {"video": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
        with _quiet_export():
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, opset_version=opset, input_names=["video"],
                output_names=["logits"], dynamic_axes=axes, do_constant_folding=True,
            )
    else:
        raise ExportError(f"exporter must be one of {ONNX_EXPORTERS}, got {exporter!r}")


def _check_onnx(path: Path, *, opset: int, shown: Path | None = None) -> None:
    """onnx.checker on the file, and the opset really written (an exporter may keep its own)."""
    onnx = require("onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    if written != opset:
        raise ExportError(f"{shown or path}: the exporter wrote opset {written}, not the requested {opset}; "
                          f"choose --opset {written} (or another exporter)")


def _export_program(model: nn.Module, path: Path, example: Tensor, *, dynamic_batch: bool) -> None:
    dynamic = ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},) if dynamic_batch else None
    with _quiet_export():
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
    torch.export.save(program, str(path))


def _runner(path: Path, fmt: str):
    """A function clips -> logits (torch) that runs the written file."""
    if fmt == "onnx":
        from tada.deploy.serving import OnnxPredictor

        predictor = OnnxPredictor(path, sidecar=_PROBE_SIDECAR)
        return predictor
    program = torch.export.load(str(path)).module()

    def run_program(x: Tensor) -> Tensor:
        with torch.no_grad():
            return program(x)

    return run_program


# A minimal sidecar used while verifying, before the real one is written.
_PROBE_SIDECAR: dict[str, Any] = {"format": "onnx"}


def export_model(
    model: nn.Module,
    output: str | Path,
    *,
    fmt: str,
    num_frames: int,
    crop_size: int,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    fold_bn: bool = True,
    verify: bool = True,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportReport:
    """Write ``model`` (logits for (B, 3, num_frames, crop_size, crop_size)) as ONNX or a .pt2 program.

    ``dynamic_batch`` makes B free (1..4096); otherwise the file takes exactly ``batch`` clips.
    With ``verify`` the written file is run on random clips and compared with the eager model; a logit
    that differs by more than ``tolerance * (1 + |eager logit|)`` raises (absolute near zero, relative
    for large logits, whose float32 rounding is larger). No sidecar is written here (see
    :func:`export_from_config`).
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {fmt!r}")
    if opset < 17:
        raise ExportError(f"--opset must be >= 17, got {opset}")
    if batch < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    output = Path(output)
    if output.suffix != _SUFFIX[fmt]:
        raise ExportError(f"--output for format {fmt!r} must end in {_SUFFIX[fmt]}, got {output}")
    if exporter not in ONNX_EXPORTERS:
        raise ExportError(f"exporter must be one of {ONNX_EXPORTERS}, got {exporter!r}")
    if exporter == "auto":  # the dynamo exporter writes opset 18 and up only
        exporter = "dynamo" if opset >= 18 else "torchscript"
    output.parent.mkdir(parents=True, exist_ok=True)
    reference = copy.deepcopy(model).eval()  # the model as given: what the file must reproduce
    batches = ([1, 3] if dynamic_batch else [batch]) if verify else []
    probes = {b: _example((b, 3, num_frames, crop_size, crop_size), seed + b) for b in batches}
    with torch.no_grad():
        expected = {b: reference(x) for b, x in probes.items()}
    if any(not torch.isfinite(e).all() for e in expected.values()):
        raise ExportError(
            "the eager model gives non-finite logits on random clips (untrained BN statistics?); "
            "cannot verify an export of it: load a trained checkpoint or pass --no-verify"
        )
    prepared = prepare_for_export(model, fold_bn=fold_bn)
    # A batch of 2 for dynamic export: tracing at 1 would let the exporter specialise the batch to 1.
    example = _example((2 if dynamic_batch else batch, 3, num_frames, crop_size, crop_size), seed)
    # Written and checked under a temporary name, then renamed: a failed export never replaces
    # (or removes) a file already at ``output``.
    staged = output.with_name(f".{output.stem}.{os.getpid()}.partial{output.suffix}")
    start = time.perf_counter()
    try:
        if fmt == "onnx":
            try:
                _export_onnx(prepared, staged, example, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter)
            except torch.onnx.errors.OnnxExporterError as err:
                other = "torchscript" if exporter == "dynamo" else "dynamo"
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ExportError(f"the {exporter} ONNX exporter failed: {first} (try --exporter {other})") from err
            _check_onnx(staged, opset=opset, shown=output)
        else:
            _export_program(prepared, staged, example, dynamic_batch=dynamic_batch)
        seconds = time.perf_counter() - start
        worst = 0.0
        if verify:
            run_file = _runner(staged, fmt)
            outside = []
            for b, x in probes.items():
                want = expected[b].double()
                diff = (run_file(x).double() - want).abs()
                worst = max(worst, float(diff.max()))
                allowed = tolerance * (1 + want.abs())  # float32 rounding grows with the logits' size
                if bool((diff > allowed).any()):
                    k = int(torch.argmax(diff - allowed))
                    outside.append(f"{float(diff.flatten()[k]):.3g} at a logit of {float(want.flatten()[k]):.4g} "
                                   f"(batch {b})")
            if outside:
                kept = "the existing file was kept" if output.exists() else "nothing was written"
                raise ExportError(
                    f"{output}: exported logits differ from eager PyTorch by more than tolerance x (1 + |logit|), "
                    f"tolerance {tolerance:g}: {'; '.join(outside)}; {kept}"
                )
        os.replace(staged, output)
    finally:
        staged.unlink(missing_ok=True)
    shape: list[int | None] = [None if dynamic_batch else batch, 3, num_frames, crop_size, crop_size]
    return ExportReport(output, None, fmt, shape, worst, batches, seconds,
                        extra={"exporter": exporter if fmt == "onnx" else "torch.export",
                               "opset": opset if fmt == "onnx" else None, "bn_folded": fold_bn})


# ------------------------------------------------------------------------------------------------
# From a config and a checkpoint
# ------------------------------------------------------------------------------------------------
def resolve_class_names(cfg: Any, class_names_file: str = "") -> list[str] | None:
    """Class names for the sidecar, as `tada predict` finds them: ``class_names_file``, else
    DATA.CLASS_NAMES_FILE, else the dataset's own file (``classes.txt`` of the synthetic dataset, the
    SSv2 labels JSON); None when there is none.

    A relative DATA.CLASS_NAMES_FILE is read under DATA.ANNO_DIR (else DATA.DATA_ROOT_DIR). A named
    file that does not exist, or whose count differs from VIDEO.HEAD.NUM_CLASSES, is an error.
    """
    from tada.data.annotations import AnnotationError, read_class_names, read_ssv2_labels

    anno = Path(cfg.DATA.ANNO_DIR or cfg.DATA.DATA_ROOT_DIR or ".")
    dataset = cfg.TEST.DATASET.lower()
    path: Path | None = None
    if class_names_file:
        path = Path(class_names_file).expanduser()
    elif cfg.DATA.CLASS_NAMES_FILE:
        path = Path(cfg.DATA.CLASS_NAMES_FILE).expanduser()
        path = path if path.is_absolute() else anno / path
    elif dataset == "synthetic":
        path = anno / "classes.txt"
    elif "ssv2" in dataset and (anno / "something-something-v2-labels.json").is_file():
        path = anno / "something-something-v2-labels.json"
    if path is None:
        return None
    if not path.is_file():
        raise ExportError(f"class names file not found: {path} (pass --class-names FILE or set DATA.CLASS_NAMES_FILE)")
    try:
        names = read_ssv2_labels(path) if path.suffix == ".json" else read_class_names(path)
    except AnnotationError as err:
        raise ExportError(str(err)) from err
    if len(names) != cfg.VIDEO.HEAD.NUM_CLASSES:
        raise ExportError(
            f"{path}: {len(names)} class names, but VIDEO.HEAD.NUM_CLASSES is {cfg.VIDEO.HEAD.NUM_CLASSES}"
        )
    return names


def build_sidecar(
    cfg: Any,
    report: ExportReport,
    *,
    class_names: list[str] | None,
    cfg_path: str | None,
    checkpoint: str | None,
) -> dict[str, Any]:
    """Everything a runtime needs to feed the exported model, plus where it came from."""
    d = cfg.DATA
    test_views = multi_view_protocol(cfg)
    return {
        "sidecar_version": SIDECAR_VERSION,
        "tada_version": tada.__version__,
        "format": report.format,
        "model_file": report.path.name,
        "model_sha256": file_sha256(report.path),
        "input_name": "video",
        "output_name": "logits",
        "input_layout": "BCTHW",
        "input_shape": report.input_shape,
        "input_dtype": "float32",
        "dynamic_batch": report.input_shape[0] is None,
        "output": "logits (B, num_classes); softmax gives probabilities",
        "num_frames": int(d.NUM_INPUT_FRAMES),
        "sampling_mode": d.SAMPLING_MODE,
        "sampling_rate": int(d.SAMPLING_RATE),
        "target_fps": d.TARGET_FPS,
        "test_scale": int(d.TEST_SCALE),
        "crop_size": int(d.TEST_CROP_SIZE),
        "mean": [float(v) for v in d.MEAN],
        "std": [float(v) for v in d.STD],
        "pixel_range": "RGB in [0, 1], then (x - mean) / std per channel",
        "test_views": {
            "ensemble_views": test_views[0],
            "spatial_crops": test_views[1],
            "ensemble_method": d.ENSEMBLE_METHOD,
        },
        "num_classes": int(cfg.VIDEO.HEAD.NUM_CLASSES),
        "class_names": class_names,
        "opset": report.extra.get("opset"),
        "exporter": report.extra.get("exporter"),
        "bn_folded": report.extra.get("bn_folded"),
        "verified_max_abs_diff": report.max_abs_diff if report.checked_batches else None,
        "verified_batches": report.checked_batches,
        "config": cfg_path,
        "checkpoint": checkpoint,
        "model_name": cfg.MODEL.NAME,
    }


def export_from_config(
    cfg: Any,
    *,
    checkpoint: str,
    fmt: str,
    output: str | Path,
    cfg_path: str | None = None,
    class_names_file: str = "",
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    fold_bn: bool = True,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Build the config's model, load ``checkpoint`` (strict), export it and write the sidecar.

    The input is (B, 3, DATA.NUM_INPUT_FRAMES, DATA.TEST_CROP_SIZE, DATA.TEST_CROP_SIZE): the test view.
    """
    from tada.checkpoint import CheckpointError, load_checkpoint
    from tada.models import build_model

    if not checkpoint:
        raise ExportError("--checkpoint is required: exporting a randomly initialised model is never what you want")
    if not Path(checkpoint).is_file():
        raise ExportError(f"checkpoint not found: {checkpoint}")
    class_names = resolve_class_names(cfg, class_names_file)  # fail on a bad names file before the slow part
    model = build_model(cfg)
    try:
        load_checkpoint(model, checkpoint, strict=True)
    except (FileNotFoundError, CheckpointError) as err:
        raise ExportError(str(err)) from err
    report = export_model(
        model, output, fmt=fmt, num_frames=int(cfg.DATA.NUM_INPUT_FRAMES), crop_size=int(cfg.DATA.TEST_CROP_SIZE),
        batch=batch, dynamic_batch=dynamic_batch, opset=opset, exporter=exporter, fold_bn=fold_bn,
        verify=verify, tolerance=tolerance,
    )
    sidecar = build_sidecar(cfg, report, class_names=class_names, cfg_path=cfg_path, checkpoint=str(checkpoint))
    report.sidecar = write_sidecar(report.path, sidecar)
    read_sidecar(report.sidecar)  # what we wrote must read back
    return report
