"""Serving exported models: the JSON sidecar and an onnxruntime predictor.

An exported model (``tada export``) is a model file plus ``<model file>.json``, the sidecar that
says how to feed it: clip length, sampling, test scale and crop, mean/std, class names. The
predictor here needs only those two files and ``onnxruntime``, no config and no checkpoint::

    from tada.deploy.serving import OnnxPredictor
    predictor = OnnxPredictor("tada2d.onnx")           # reads tada2d.onnx.json
    logits = predictor(batch)                          # (B, 3, T, H, W) numpy or torch -> logits
    predictor.config_overrides()                       # DATA.* overrides for the test pipeline

``onnx`` and ``onnxruntime`` are optional (``pip install 'tada[export]'``); a missing one is a
:class:`~tada.errors.TadaError` with that one-line hint.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tada.errors import TadaError
from tada.fileio import file_sha256

__all__ = [
    "INSTALL_HINT",
    "SIDECAR_VERSION",
    "OnnxPredictor",
    "SidecarError",
    "check_model_hash",
    "load_predictor",
    "onnx_backend",
    "read_sidecar",
    "require",
    "sidecar_path",
    "sidecar_overrides",
    "write_sidecar",
]

INSTALL_HINT = "pip install 'tada[export]'"
# 2: the sidecar records the model file's SHA-256 (``model_sha256``), checked when the model is served.
SIDECAR_VERSION = 2

# Keys every sidecar must carry (the rest is informative).
_REQUIRED = (
    "sidecar_version", "format", "model_file", "input_name", "output_name", "input_layout",
    "input_shape", "dynamic_batch", "num_frames", "sampling_mode", "sampling_rate", "target_fps",
    "test_scale", "crop_size", "mean", "std", "num_classes", "class_names", "model_sha256",
)


class SidecarError(TadaError, ValueError):
    """A sidecar file is missing, unreadable or lacks a key; the message names the file and key."""


def require(module: str) -> ModuleType:
    """Import an optional export dependency, or fail with the one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise TadaError(f"'{module}' is not installed ({err}); install it with: {INSTALL_HINT}") from err


# ------------------------------------------------------------------------------------------------
# The sidecar
# ------------------------------------------------------------------------------------------------
def sidecar_path(model_path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (appended, so an ONNX and a .pt2 export never collide)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def write_sidecar(model_path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the sidecar next to ``model_path``; refuses a dict without the required keys."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"sidecar for {model_path} lacks required keys {missing}")
    path = sidecar_path(model_path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a sidecar (``path`` is the sidecar itself or the model file next to it)."""
    path = Path(path)
    if path.suffix != ".json":
        path = sidecar_path(path)
    if not path.is_file():
        raise SidecarError(
            f"sidecar not found: {path} (written by `tada export` next to the model; it says how to feed the model)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SidecarError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise SidecarError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.get("sidecar_version")
    if version == 1:
        raise SidecarError(
            f"{path}: sidecar_version 1 does not record the model file's sha256, so nothing ties it to its "
            f"model; re-export the model with `tada export` (this tada reads sidecar_version {SIDECAR_VERSION})"
        )
    if version != SIDECAR_VERSION:
        raise SidecarError(f"{path}: sidecar_version {version!r} is not supported (this tada reads {SIDECAR_VERSION})")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise SidecarError(f"{path}: missing keys {missing}")
    names = data["class_names"]
    if names is not None and (not isinstance(names, list) or len(names) != data["num_classes"]):
        raise SidecarError(
            f"{path}: class_names must be null or a list of num_classes={data['num_classes']} names"
        )
    return data


def check_model_hash(model_path: str | os.PathLike, sidecar: dict[str, Any]) -> None:
    """Refuse a model file that is not the one the sidecar was written for (its SHA-256 differs)."""
    actual = file_sha256(model_path)
    if actual != sidecar["model_sha256"]:
        raise SidecarError(
            f"{model_path} (sha256 {actual[:16]}...) is not the model its sidecar describes (model_file "
            f"{sidecar.get('model_file')!r}, sha256 {str(sidecar['model_sha256'])[:16]}...): the model or the "
            f"sidecar was replaced; re-export with `tada export` or put the matching pair side by side"
        )


def sidecar_overrides(sidecar: dict[str, Any]) -> list[Any]:
    """Config overrides (``["KEY", value, ...]``) that make a config's test pipeline feed this model."""
    return [
        "DATA.NUM_INPUT_FRAMES", sidecar["num_frames"],
        "DATA.SAMPLING_MODE", sidecar["sampling_mode"],
        "DATA.SAMPLING_RATE", sidecar["sampling_rate"],
        "DATA.TARGET_FPS", sidecar["target_fps"],
        "DATA.TEST_SCALE", sidecar["test_scale"],
        "DATA.TEST_CROP_SIZE", sidecar["crop_size"],
        "DATA.MEAN", list(sidecar["mean"]),
        "DATA.STD", list(sidecar["std"]),
        "VIDEO.HEAD.NUM_CLASSES", sidecar["num_classes"],
        *_test_view_overrides(sidecar.get("test_views")),
    ]


def _test_view_overrides(views: Any) -> list[Any]:
    """The multi-view protocol the sidecar records (older sidecars may lack it)."""
    if not isinstance(views, dict):
        return []
    return [
        "TEST.MULTI_VIEW_ENSEMBLE_VIEWS", int(views["ensemble_views"]),
        "TEST.MULTI_VIEW_SPATIAL_CROPS", int(views["spatial_crops"]),
        "DATA.ENSEMBLE_METHOD", views["ensemble_method"],
    ]


# ------------------------------------------------------------------------------------------------
# onnxruntime predictor
# ------------------------------------------------------------------------------------------------
def _ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (pybind classes deriving from Exception directly)."""
    state = importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError,)


class OnnxPredictor:
    """An exported ONNX model on onnxruntime: ``predictor(clips)`` -> logits.

    ``clips`` is a float (B, 3, T, H, W) batch, already normalised as the sidecar says (the same
    tensor the PyTorch model takes). A numpy batch gives numpy logits, a torch batch torch logits
    (on CPU). ``threads`` sets onnxruntime's intra-op threads (0 = its default); graph
    optimisations are all on.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        sidecar: str | os.PathLike | dict[str, Any] | None = None,
        threads: int = 0,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        ort = require("onnxruntime")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise TadaError(f"ONNX model not found: {self.model_path}")
        if isinstance(sidecar, dict):
            self.sidecar = sidecar
        else:
            self.sidecar = read_sidecar(sidecar if sidecar is not None else self.model_path)
        if self.sidecar["format"] != "onnx":
            raise SidecarError(
                f"{self.model_path}: the sidecar says format {self.sidecar['format']!r}; "
                "OnnxPredictor runs 'onnx' exports"
            )
        if "model_sha256" in self.sidecar:
            check_model_hash(self.model_path, self.sidecar)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.model_path), options, providers=list(providers))
        except _ort_errors() as err:
            raise TadaError(f"{self.model_path}: onnxruntime cannot load the model: {err}") from err
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise TadaError(f"{self.model_path}: expected one input (the clip batch), got {[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name
        # Static dims are ints, the dynamic batch a name (or None): checked on every call.
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)

    # --- what to feed --------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.sidecar["num_frames"])

    @property
    def crop_size(self) -> int:
        return int(self.sidecar["crop_size"])

    @property
    def num_classes(self) -> int:
        return int(self.sidecar["num_classes"])

    @property
    def class_names(self) -> list[str] | None:
        return self.sidecar["class_names"]

    def config_overrides(self) -> list[Any]:
        """DATA.* and VIDEO.HEAD.NUM_CLASSES overrides for a config's test pipeline (see sidecar_overrides)."""
        return sidecar_overrides(self.sidecar)

    # --- running -------------------------------------------------------------------------------
    def _check(self, shape: tuple[int, ...]) -> None:
        """Static dims must match; a static batch b0 also accepts any multiple of b0 (run in chunks)."""
        expected = self.input_shape
        ok = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected[1:], shape[1:]))
        ok = ok and shape[0] >= 1 and (expected[0] is None or shape[0] % expected[0] == 0)
        if not ok:
            want = "(" + ", ".join("B" if e is None else str(e) for e in expected) + ")"
            multiple = "" if expected[0] is None else f", a batch that is a multiple of {expected[0]}"
            raise ValueError(
                f"{self.model_path}: input must have shape {want} (B, 3, T, H, W){multiple}; got {tuple(shape)}"
            )

    def run(self, clips: np.ndarray) -> np.ndarray:
        """Logits (B, num_classes) for a float32 numpy batch."""
        clips = np.ascontiguousarray(clips, dtype=np.float32)
        self._check(clips.shape)
        step = self.input_shape[0] or clips.shape[0]
        outs = [self.session.run([self.output_name], {self.input_name: clips[i : i + step]})[0]
                for i in range(0, clips.shape[0], step)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def __call__(self, clips: Any) -> Any:
        if isinstance(clips, dict):  # the model's {"video": tensor} input form
            clips = clips["video"]
        if isinstance(clips, np.ndarray):
            return self.run(clips)
        import torch  # only for torch input; the numpy path needs no torch

        if isinstance(clips, torch.Tensor):
            return torch.from_numpy(self.run(clips.detach().to("cpu", torch.float32).numpy()))
        raise TypeError(f"clips must be a numpy array or a torch tensor, got {type(clips).__name__}")

    def eval(self) -> OnnxPredictor:
        """No-op, so code written for an nn.Module in eval mode can take a predictor."""
        return self


def load_predictor(model_path: str | os.PathLike, *, threads: int = 0) -> OnnxPredictor:
    """An :class:`OnnxPredictor` for an exported model file (its sidecar next to it)."""
    return OnnxPredictor(model_path, threads=threads)


def onnx_backend(cfg: Any, model_path: str | os.PathLike, *, threads: int = 0) -> tuple[OnnxPredictor, Any]:
    """For ``tada predict --backend onnxruntime``: the predictor, and ``cfg`` with the sidecar's input
    settings (frames, sampling, scale, crop, mean/std, classes) so the test pipeline feeds the model
    exactly what it was exported for. The predictor is called like the model: clips -> logits."""
    predictor = load_predictor(model_path, threads=threads)
    return predictor, cfg.with_overrides(predictor.config_overrides())
