"""SGD with the official parameter groups, and the per-iteration cosine schedule with warm-up.

Groups (spec section 5): parameters are sorted by substrings of their names, first match wins, so
that BN parameters and every bias get no weight decay while conv, linear and routing weights do.
The order of the nine groups is the official one, so official optimizer states load unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["GROUP_NAMES", "build_optimizer", "epoch_position", "lr_at", "lr_from_config", "param_groups", "set_lr"]

GROUP_NAMES = (
    "bn",
    "rf_bn",
    "rf_weight",
    "rf_bias",
    "weight",
    "bias",
    "head_weight",
    "head_bias",
    "no_wd",
)


def _group_of(name: str) -> str:
    if "rf" in name:
        if "bn" in name:
            return "rf_bn"
        return "rf_bias" if "bias" in name else "rf_weight"
    if "embd" in name or "cls_token" in name:
        return "no_wd"
    if "bn" in name or "norm" in name:
        return "bn"
    if "head" in name:
        return "head_bias" if "bias" in name else "head_weight"
    return "bias" if "bias" in name else "weight"


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    weight_decay: float,
    bn_weight_decay: float = 0.0,
    bias_double: bool = False,
    only_linear: bool = False,
) -> list[dict[str, Any]]:
    """The nine official groups (some may be empty), each with ``name``, ``weight_decay``, ``lr_mult``.

    ``only_linear`` trains the classifier alone: everything outside ``head`` gets requires_grad False.
    """
    buckets: dict[str, list[nn.Parameter]] = {g: [] for g in GROUP_NAMES}
    for name, param in named_params:
        if only_linear and "head" not in name:
            param.requires_grad_(False)
        if not param.requires_grad:
            continue
        buckets[_group_of(name)].append(param)
    decay = {
        "bn": bn_weight_decay,
        "rf_bn": bn_weight_decay,
        "rf_weight": weight_decay,
        "rf_bias": 0.0,
        "weight": weight_decay,
        "bias": 0.0,
        "head_weight": weight_decay,
        "head_bias": 0.0,
        "no_wd": 0.0,
    }
    doubled = {"rf_bias", "bias", "head_bias"} if bias_double else set()
    return [
        {
            "params": buckets[g],
            "name": g,
            "weight_decay": decay[g],
            "lr_mult": 2.0 if g in doubled else 1.0,
        }
        for g in GROUP_NAMES
    ]


def build_optimizer(model: nn.Module, opt_cfg: Any, bn_cfg: Any, *, only_linear: bool = False) -> torch.optim.SGD:
    """SGD (momentum, dampening, Nesterov from ``OPTIMIZER``) over :func:`param_groups`."""
    if opt_cfg.OPTIM_METHOD != "sgd":
        raise ValueError(f"OPTIMIZER.OPTIM_METHOD {opt_cfg.OPTIM_METHOD!r} is not supported (only 'sgd')")
    groups = param_groups(
        model.named_parameters(),
        weight_decay=opt_cfg.WEIGHT_DECAY,
        bn_weight_decay=bn_cfg.WEIGHT_DECAY,
        bias_double=opt_cfg.BIAS_DOUBLE,
        only_linear=only_linear,
    )
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    if n_grouped != n_params:  # a parameter in no group would silently never train
        raise RuntimeError(f"parameter grouping lost parameters: {n_grouped} grouped of {n_params}")
    return torch.optim.SGD(
        groups,
        lr=opt_cfg.BASE_LR,
        momentum=opt_cfg.MOMENTUM,
        dampening=opt_cfg.DAMPENING,
        nesterov=opt_cfg.NESTEROV,
        weight_decay=opt_cfg.WEIGHT_DECAY,
    )


def epoch_position(epoch: int, iteration: int, iters_per_epoch: int, num_folds: int = 1) -> float:
    """The fractional epoch the schedule is evaluated at: ``epoch + NUM_FOLDS * iter / iters_per_epoch``."""
    return epoch + num_folds * iteration / iters_per_epoch


def lr_at(
    e: float,
    *,
    base_lr: float,
    max_epoch: float,
    warmup_epochs: float = 0.0,
    warmup_start_lr: float = 0.0,
    end_lr: float = 0.0,
    cosine_after_warmup: bool = False,
) -> float:
    """Learning rate at fractional epoch ``e`` (official cosine; linear warm-up to the cosine value).

    The cosine runs over the whole schedule from epoch 0 (``cosine_after_warmup`` starts it at the
    end of the warm-up instead); the warm-up goes linearly from ``warmup_start_lr`` to the cosine's
    value at ``warmup_epochs``, not to ``base_lr`` (spec section 5).
    """

    def cosine(x: float) -> float:
        if cosine_after_warmup:
            span = max(max_epoch - warmup_epochs, 1e-12)
            x = x - warmup_epochs
        else:
            span = max_epoch
        return end_lr + (base_lr - end_lr) * 0.5 * (1.0 + math.cos(math.pi * x / span))

    if e < warmup_epochs:
        target = cosine(warmup_epochs)
        return warmup_start_lr + e * (target - warmup_start_lr) / warmup_epochs
    return cosine(e)


def lr_from_config(opt_cfg: Any, e: float, *, global_batch: int) -> float:
    """:func:`lr_at` with ``OPTIMIZER`` keys; ADJUST_LR scales BASE_LR by global batch / 256, once."""
    base = opt_cfg.BASE_LR * (global_batch / 256.0 if opt_cfg.ADJUST_LR else 1.0)
    return lr_at(
        e,
        base_lr=base,
        max_epoch=opt_cfg.MAX_EPOCH,
        warmup_epochs=opt_cfg.WARMUP_EPOCHS,
        warmup_start_lr=opt_cfg.WARMUP_START_LR,
        end_lr=opt_cfg.COSINE_END_LR,
        cosine_after_warmup=opt_cfg.COSINE_AFTER_WARMUP,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every group ``lr * lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
