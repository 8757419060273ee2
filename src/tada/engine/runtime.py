"""What training and testing share: AMP precision, cuDNN settings, and the default model and dataset builders."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from tada.engine.distributed import EngineError

__all__ = ["Precision", "autocast", "configure_backends", "default_dataset_fn", "default_model_fn", "resolve_precision"]

log = logging.getLogger(__name__)


class Precision:
    """The autocast dtype (None = FP32) and whether fp16 needs a GradScaler."""

    def __init__(self, dtype: torch.dtype | None, *, scaler: bool, label: str):
        self.dtype = dtype
        self.scaler = scaler
        self.label = label


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """TRAIN.AMP -> precision: bf16 where the device supports it, fp16 with a GradScaler otherwise."""
    if mode == "off":
        return Precision(None, scaler=False, label="fp32")
    if device.type == "cuda":
        if mode == "bf16" and torch.cuda.is_bf16_supported():
            return Precision(torch.bfloat16, scaler=False, label="bf16")
        if mode == "bf16":
            log.warning("TRAIN.AMP bf16: this GPU has no bf16 support; using fp16 with a GradScaler")
        return Precision(torch.float16, scaler=True, label="fp16+GradScaler")
    if mode == "fp16":
        raise EngineError("TRAIN.AMP fp16 needs a CUDA device; on the CPU use TRAIN.AMP bf16 or off")
    return Precision(torch.bfloat16, scaler=False, label="bf16 (CPU autocast)")


def autocast(
    precision: Precision, device: torch.device, *, cache_enabled: bool = True
) -> contextlib.AbstractContextManager:
    """``cache_enabled=False`` inside a CUDA graph capture (autocast's weight cache cannot be captured)."""
    if precision.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype, cache_enabled=cache_enabled)


def configure_backends(device: torch.device, *, deterministic: bool) -> None:
    """cuDNN autotuning by default; deterministic algorithms only when asked (TRAIN.DETERMINISTIC)."""
    if device.type != "cuda":
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def default_model_fn(cfg: Any) -> nn.Module:
    """The model a config describes (:func:`tada.models.build_model`): the default ``model_fn``."""
    from tada.models import build_model

    return build_model(cfg)


def default_dataset_fn(cfg: Any, split: str) -> Any:
    """The dataset of ``split`` a config describes (:func:`tada.data.build_dataset`): the default ``dataset_fn``."""
    from tada.data import build_dataset

    return build_dataset(cfg, split)
