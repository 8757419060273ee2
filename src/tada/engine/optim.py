"""SGD, Adam or AdamW with the official parameter groups, and the per-iteration schedules.

Two ways of grouping, chosen as the official code chooses them, by OPTIMIZER.LAYER_WISE_LR_DECAY:

- 1.0 (TAda2D, TAdaConvNeXtV2): parameters are sorted by substrings of their names, first match
  wins, so that BN parameters and every bias get no weight decay while conv, linear and routing
  weights do. With TRAIN.LR_REDUCE and TRAIN.FINE_TUNE the routing ("rf") and head weights learn
  5x and their biases 10x faster. The order of the nine groups is the official one, so official
  optimizer states load unchanged. The rules are substring rules and keep their surprises:
  ``b_bias.weight`` counts as a bias, routing LayerNorm weights and index-named LayerNorms
  (``downsample_layers.0.1``) get weight decay.
- below 1 (TAdaFormer): layer-wise decay. Each parameter gets a layer id from its name
  (0: embeddings, ``backbone.conv1``, ``backbone.ln_pre``; i+1: ``backbone.layers.{i}``; L+1:
  everything else), the multiplier ``decay ** (L + 1 - id)``, times OPTIMIZER.NEW_PARAMS_MULT for
  names holding a NEW_PARAMS substring and OPTIMIZER.HEAD_LRMULT for names holding "head";
  1-D tensors and ``.bias`` names get no weight decay.

Gradient clipping (OPTIMIZER.CLIP_GRAD_NORM, off by default as in the official loop) scales all
gradients together to a global norm of at most the given value before the step.

Schedules: ``cosine`` (from epoch 0 to 0, linear warm-up to its value at the warm-up's end) and
``cosine_v2`` (to COSINE_END_LR, restarted at the warm-up's end when COSINE_AFTER_WARMUP).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "GROUP_NAMES",
    "build_optimizer",
    "clip_gradients",
    "epoch_position",
    "layer_decay_groups",
    "layer_id",
    "lr_at",
    "lr_from_config",
    "param_groups",
    "set_lr",
]

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
    lr_reduce: bool = False,
    only_linear: bool = False,
) -> list[dict[str, Any]]:
    """The nine official groups (some may be empty), each with ``name``, ``weight_decay``, ``lr_mult``.

    ``lr_reduce`` (TRAIN.LR_REDUCE and TRAIN.FINE_TUNE): routing and head weights x5, their biases
    x10, everything else x1. ``only_linear`` trains the classifier alone: everything outside
    ``head`` gets requires_grad False.
    """
    if bias_double and lr_reduce:
        raise ValueError("OPTIMIZER.BIAS_DOUBLE and TRAIN.LR_REDUCE (with FINE_TUNE) both set bias learning "
                         "rates: set one of them false")
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
    mult = {g: 1.0 for g in GROUP_NAMES}
    if bias_double:
        mult.update(rf_bias=2.0, bias=2.0, head_bias=2.0)
    if lr_reduce:
        mult.update(rf_weight=5.0, rf_bias=10.0, head_weight=5.0, head_bias=10.0)
    return [
        {"params": buckets[g], "name": g, "weight_decay": decay[g], "lr_mult": mult[g]}
        for g in GROUP_NAMES
    ]


_LAYER_RE = re.compile(r"(?:^|\.)backbone\.layers\.(\d+)\.")
_EMBEDDING_WORDS = ("embedding", "embd", "cls_token", "logit_scale")


def layer_id(name: str, num_layers: int) -> int:
    """The layer-wise-decay id of a parameter name: 0 embeddings and stem, i+1 for transformer
    layer i, ``num_layers + 1`` for the final norm, the head and anything else."""
    if any(word in name for word in _EMBEDDING_WORDS):
        return 0
    bare = name[len("module."):] if name.startswith("module.") else name
    if bare.startswith(("backbone.conv1.", "backbone.ln_pre.")):
        return 0
    match = _LAYER_RE.search(name)
    if match:
        index = int(match.group(1))
        if index >= num_layers:
            raise ValueError(f"parameter {name}: layer {index} but VIDEO.BACKBONE.DEPTH is {num_layers}")
        return index + 1
    return num_layers + 1


def layer_decay_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    *,
    num_layers: int,
    decay: float,
    weight_decay: float,
    new_params: Iterable[str] = (),
    new_params_mult: float = 1.0,
    head_mult: float = 1.0,
    only_linear: bool = False,
) -> list[dict[str, Any]]:
    """Layer-wise-decay groups in order of first appearance, each with ``name``, ``weight_decay``, ``lr_mult``.

    One group per (layer id, decay or not, new parameter or not, head or not); see the module
    docstring for the rules. A model with no ``backbone.layers.{i}`` parameter is an error: the
    rule has nothing to decay (the official code fails there too, for ConvNeXt).
    """
    new_params = tuple(new_params)
    groups: dict[str, dict[str, Any]] = {}
    has_layers = False
    for name, param in named_params:
        if only_linear and "head" not in name:
            param.requires_grad_(False)
        if not param.requires_grad:
            continue
        lid = layer_id(name, num_layers)
        has_layers = has_layers or 1 <= lid <= num_layers
        no_wd = param.ndim == 1 or name.endswith(".bias")
        is_new = any(word in name for word in new_params)
        is_head = "head" in name
        key = f"layer_{lid}_{'no_decay' if no_wd else 'decay'}{'_new' if is_new else ''}{'_head' if is_head else ''}"
        if key not in groups:
            mult = decay ** (num_layers + 1 - lid)
            mult *= new_params_mult if is_new else 1.0
            mult *= head_mult if is_head else 1.0
            groups[key] = {"params": [], "name": key, "weight_decay": 0.0 if no_wd else weight_decay,
                           "lr_mult": mult, "layer_id": lid}
        groups[key]["params"].append(param)
    if groups and not has_layers and not only_linear:
        raise ValueError(
            f"OPTIMIZER.LAYER_WISE_LR_DECAY {decay} needs a model with transformer layers named "
            "backbone.layers.{i} (TAdaFormer); this model has none: set it to 1.0"
        )
    return list(groups.values())


ADAM_EPS = 1e-8  # torch's default, as the official Adam/AdamW


def build_optimizer(
    model: nn.Module,
    opt_cfg: Any,
    bn_cfg: Any,
    *,
    only_linear: bool = False,
    lr_reduce: bool = False,
    num_layers: int | None = None,
) -> torch.optim.Optimizer:
    """OPTIMIZER.OPTIM_METHOD (sgd, adam, adamw) over :func:`param_groups` or :func:`layer_decay_groups`.

    ``lr_reduce`` is TRAIN.LR_REDUCE and TRAIN.FINE_TUNE; ``num_layers`` (VIDEO.BACKBONE.DEPTH) is
    needed when OPTIMIZER.LAYER_WISE_LR_DECAY is below 1.
    """
    method = opt_cfg.OPTIM_METHOD
    if method not in ("sgd", "adam", "adamw"):
        raise ValueError(f"OPTIMIZER.OPTIM_METHOD {method!r} is not supported (sgd, adam or adamw)")
    decay = float(opt_cfg.LAYER_WISE_LR_DECAY)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"OPTIMIZER.LAYER_WISE_LR_DECAY must be in (0, 1], got {decay}")
    if decay < 1.0:
        if num_layers is None:
            raise ValueError("OPTIMIZER.LAYER_WISE_LR_DECAY < 1 needs the number of layers (VIDEO.BACKBONE.DEPTH)")
        groups = layer_decay_groups(
            model.named_parameters(), num_layers=num_layers, decay=decay, weight_decay=opt_cfg.WEIGHT_DECAY,
            new_params=opt_cfg.NEW_PARAMS, new_params_mult=opt_cfg.NEW_PARAMS_MULT,
            head_mult=opt_cfg.HEAD_LRMULT, only_linear=only_linear,
        )
    else:
        groups = param_groups(
            model.named_parameters(),
            weight_decay=opt_cfg.WEIGHT_DECAY,
            bn_weight_decay=bn_cfg.WEIGHT_DECAY,
            bias_double=opt_cfg.BIAS_DOUBLE,
            lr_reduce=lr_reduce,
            only_linear=only_linear,
        )
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_grouped = sum(p.numel() for g in groups for p in g["params"])
    if n_grouped != n_params:  # a parameter in no group would silently never train
        raise RuntimeError(f"parameter grouping lost parameters: {n_grouped} grouped of {n_params}")
    if method == "sgd":
        return torch.optim.SGD(
            groups,
            lr=opt_cfg.BASE_LR,
            momentum=opt_cfg.MOMENTUM,
            dampening=opt_cfg.DAMPENING,
            nesterov=opt_cfg.NESTEROV,
            weight_decay=opt_cfg.WEIGHT_DECAY,
        )
    betas = tuple(float(b) for b in opt_cfg.BETAS)
    if len(betas) != 2:
        raise ValueError(f"OPTIMIZER.BETAS needs two values, got {list(opt_cfg.BETAS)}")
    cls = torch.optim.AdamW if method == "adamw" else torch.optim.Adam
    return cls(groups, lr=opt_cfg.BASE_LR, betas=betas, eps=ADAM_EPS, weight_decay=opt_cfg.WEIGHT_DECAY)


def epoch_position(epoch: int, iteration: int, *, iters_per_epoch: int, num_folds: int = 1) -> float:
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
    value at ``warmup_epochs``, not to ``base_lr``, as the official schedule does.
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


LR_POLICIES = ("cosine", "cosine_v2")


def lr_from_config(opt_cfg: Any, e: float, *, global_batch: int) -> float:
    """:func:`lr_at` with ``OPTIMIZER`` keys; ADJUST_LR scales BASE_LR by global batch / 256, once.

    ``cosine`` ends at 0 from epoch 0 (COSINE_END_LR and COSINE_AFTER_WARMUP are not read, as
    officially); ``cosine_v2`` ends at COSINE_END_LR and starts after the warm-up when
    COSINE_AFTER_WARMUP.
    """
    policy = opt_cfg.LR_POLICY
    if policy not in LR_POLICIES:
        raise ValueError(f"OPTIMIZER.LR_POLICY {policy!r} is not supported ({', '.join(LR_POLICIES)})")
    v2 = policy == "cosine_v2"
    base = opt_cfg.BASE_LR * (global_batch / 256.0 if opt_cfg.ADJUST_LR else 1.0)
    return lr_at(
        e,
        base_lr=base,
        max_epoch=opt_cfg.MAX_EPOCH,
        warmup_epochs=opt_cfg.WARMUP_EPOCHS,
        warmup_start_lr=opt_cfg.WARMUP_START_LR,
        end_lr=float(opt_cfg.COSINE_END_LR) if v2 else 0.0,
        cosine_after_warmup=bool(opt_cfg.COSINE_AFTER_WARMUP) if v2 else False,
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Give every group ``lr * lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def clip_gradients(optimizer: torch.optim.Optimizer, max_norm: float, *,
                   scaler: torch.amp.GradScaler | None = None) -> torch.Tensor | None:
    """Scale the gradients of ``optimizer``'s parameters to a global L2 norm of at most ``max_norm``.

    Returns their norm before clipping (a device tensor: no host sync), or None when ``max_norm``
    is 0 (off: the gradients are untouched). With ``scaler`` the gradients are unscaled first, so
    the norm is the true one; the scaler's step then does not unscale them again. A non-finite
    norm leaves the gradients non-finite, and the scaler skips that step as it would unclipped.

    Why: from scratch, a rare batch gives the routing functions of the first stage a gradient
    hundreds of times the usual one; with momentum, the step it causes moves their weights so far
    that the calibration stays noise for the rest of the run. Clipping bounds that step and leaves
    the ordinary ones as they are.
    """
    if max_norm < 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    if max_norm == 0:
        return None
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
