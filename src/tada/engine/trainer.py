"""The training loop: optimizer and per-iteration schedule, mixup/cutmix, EMA, AMP, DDP, validation, exact resume.

``train(cfg)`` runs (or finishes) the training a config describes, in OUTPUT_DIR:

- start: auto-resume from the newest checkpoint in OUTPUT_DIR, else TRAIN.CHECKPOINT_FILE_PATH
  (fine-tune: weights only, from epoch 0; otherwise continue its schedule), else ImageNet init
  (TRAIN.INIT in1k, from TRAIN.IN1K_WEIGHTS) or CLIP init (TRAIN.INIT clip, from TRAIN.CLIP_WEIGHTS),
  else random init. The choice is logged;
- an epoch-end checkpoint every CHECKPOINT_PERIOD epochs and at the end, one every
  TRAIN.CHECKPOINT_ITER_PERIOD iterations if set, and whenever validation reaches a new best;
- killed at any moment and restarted with the same command, a CPU run ends with weights
  bit-identical to an uninterrupted one (see :mod:`tada.engine.samplers` for how).
- OUTPUT_DIR belongs to one run: locked while it trains, and an auto-resume with the config of
  another run is refused (see :mod:`tada.engine.ownership`).

The hot loop never waits for the device (fp32 and bf16; with fp16, GradScaler reads its inf
check once per step): losses, accuracies and the non-finite check accumulate on the device and are
read (and all-reduced) every LOG_PERIOD iterations and before a checkpoint, so a NaN loss is
reported with its exact epoch and iteration, and non-finite weights are never checkpointed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tada.config import Config, save_config
from tada.engine import checkpointing as ckpt
from tada.engine.checkpointing import CheckpointError, unwrap
from tada.engine.distributed import (
    DistContext,
    EngineError,
    all_gather_objects,
    barrier,
    broadcast_buffers,
    init_distributed,
)
from tada.engine.ema import ModelEma
from tada.engine.interrupt import StopSignals
from tada.engine.meters import TrainMeter, ValMeter, hms
from tada.engine.mixing import Mixer, mixer_from_config
from tada.engine.optim import build_optimizer, clip_gradients, epoch_position, lr_from_config, set_lr
from tada.engine.ownership import check_resume_config, describe_command, exclusive_output_dir
from tada.engine.reporting import StatsWriter, read_stats, setup_logging, write_curves, write_json_atomic
from tada.engine.runtime import (
    Precision,
    autocast,
    configure_backends,
    default_dataset_fn,
    default_model_fn,
    resolve_precision,
)
from tada.engine.samplers import EvalSampler, SeededDataset, TrainSampler, mix_seed

__all__ = ["NonFiniteLossError", "TrainResult", "train", "validate"]

log = logging.getLogger(__name__)


class NonFiniteLossError(EngineError):
    """The loss became NaN or infinite; the message names the epoch and iteration."""


@dataclass
class TrainResult:
    """What a training call did and left in OUTPUT_DIR."""

    output_dir: Path
    last_checkpoint: Path | None
    trained: bool
    epochs: int
    train_seconds: float
    best: dict[str, Any] | None = None
    start: str = ""


@dataclass
class _Position:
    epoch: int = 0  # 0-based epoch to run next
    iteration: int = 0  # iterations of that epoch already done
    global_step: int = 0
    train_seconds: float = 0.0
    best: dict[str, Any] | None = None
    start: str = "random"
    ema_state: dict[str, Any] | None = None  # the resumed checkpoint's model_ema_state, if any


def _to_device(batch: dict, device: torch.device, *, gpu_transform: Callable | None, cfg: Config | None):
    """(video, labels) on ``device``: non-blocking copies; the GPU resize when AUGMENTATION.USE_GPU."""
    labels = batch["label"].to(device, non_blocking=True)
    if gpu_transform is not None:
        return gpu_transform(batch, cfg, device)["video"], labels
    return batch["video"].to(device, non_blocking=True), labels


def _select(batch: dict, keep: torch.Tensor) -> dict:
    """The items of a collated batch where ``keep`` is true: tensors and per-item lists alike
    (the GPU decode route carries each item's JPEG bytes in a list beside its crop-box tensor)."""
    n, mask = len(keep), keep.tolist()
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
            out[k] = v[keep]
        elif isinstance(v, (list, tuple)) and len(v) == n:
            out[k] = [x for x, m in zip(v, mask) if m]
        else:
            out[k] = v
    return out


def check_train_config(cfg: Config, world_size: int) -> None:
    """Reject settings this engine does not implement, before anything heavy happens."""
    from tada.config.schema import require_implemented

    require_implemented(cfg, ("",), EngineError)
    if cfg.TRAIN.BATCH_SIZE % world_size:
        raise EngineError(
            f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} (the global batch) is not divisible by {world_size} processes"
        )
    if cfg.OPTIMIZER.MAX_EPOCH < 1:
        raise EngineError(f"OPTIMIZER.MAX_EPOCH must be >= 1, got {cfg.OPTIMIZER.MAX_EPOCH}")
    if cfg.LOG_PERIOD < 1:
        raise EngineError(f"LOG_PERIOD must be >= 1, got {cfg.LOG_PERIOD}")
    if cfg.TRAIN.NUM_FOLDS != 1:
        raise EngineError(f"TRAIN.NUM_FOLDS must be 1 for classification, got {cfg.TRAIN.NUM_FOLDS}")
    if cfg.TRAIN.CUDA_GRAPHS:
        if cfg.NUM_GPUS < 1:
            raise EngineError("TRAIN.CUDA_GRAPHS needs a CUDA device (NUM_GPUS >= 1); set it false on CPU")
        if world_size > 1:
            raise EngineError("TRAIN.CUDA_GRAPHS is for one GPU; with several, set it false (DDP is not captured)")
        if cfg.TRAIN.COMPILE:
            raise EngineError("TRAIN.CUDA_GRAPHS and TRAIN.COMPILE are exclusive: set one of them false")
    if cfg.TRAIN.CUDA_GRAPHS and (cfg.AUGMENTATION.MIXUP.ENABLE or cfg.AUGMENTATION.CUTMIX.ENABLE):
        raise EngineError("TRAIN.CUDA_GRAPHS replays integer-label steps: it cannot be combined with "
                          "AUGMENTATION.MIXUP/CUTMIX (set TRAIN.CUDA_GRAPHS false)")
    try:
        mixer_from_config(cfg.AUGMENTATION, cfg.VIDEO.HEAD.NUM_CLASSES)
    except ValueError as err:
        raise EngineError(str(err)) from None
    if cfg.BN.SYNC and world_size > 1 and cfg.NUM_GPUS == 0:
        raise EngineError("BN.SYNC needs CUDA (SyncBatchNorm has no CPU kernels): set BN.SYNC false")


def _gmacs(model: nn.Module, shape: tuple[int, ...], *, device: torch.device) -> float:
    from tada.models.flops import count

    devices = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the counter's random input must not shift our seeds
        return count(model, shape, device=device).gmacs


def _log_model_info(cfg: Config, model: nn.Module, *, device: torch.device) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frames = cfg.DATA.NUM_INPUT_FRAMES
    train_shape = (1, 3, frames, cfg.DATA.TRAIN_CROP_SIZE, cfg.DATA.TRAIN_CROP_SIZE)
    test_shape = (1, 3, frames, cfg.DATA.TEST_CROP_SIZE, cfg.DATA.TEST_CROP_SIZE)
    info: dict[str, Any] = {"params": params, "trainable_params": trainable}
    info["gmacs_train_view"] = _gmacs(model, train_shape, device=device)
    same = test_shape == train_shape
    info["gmacs_test_view"] = info["gmacs_train_view"] if same else _gmacs(model, test_shape, device=device)
    log.info(
        "model %s: %s parameters (%s trainable); %.2f GMACs per %dx%d view, %.2f GMACs per %dx%d test view",
        cfg.MODEL.NAME, f"{params:,}", f"{trainable:,}", info["gmacs_train_view"], frames,
        cfg.DATA.TRAIN_CROP_SIZE, info["gmacs_test_view"], frames, cfg.DATA.TEST_CROP_SIZE,
    )
    return info


# --------------------------------------------------------------------------------------------
# Start: resume, fine-tune, ImageNet or random
# --------------------------------------------------------------------------------------------
def _refuse_foreign_checkpoints(cfg: Config, out: Path) -> None:
    """A run that will not resume must not share OUTPUT_DIR with another run's checkpoints.

    Their epoch files would outrank this run's (pruning, auto-resume and ``tada test`` go by
    epoch), so this run's own checkpoints would be deleted or ignored.
    """
    if cfg.TRAIN.AUTO_RESUME:
        return
    found = ckpt.list_checkpoints(out)
    if found:
        names = ", ".join(c.path.name for c in found[-3:])
        raise EngineError(
            f"OUTPUT_DIR {out} already holds {len(found)} checkpoint(s) of an earlier run ({names}) and "
            f"TRAIN.AUTO_RESUME is false: use a new OUTPUT_DIR, delete {ckpt.checkpoint_dir(out)}, or set "
            f"TRAIN.AUTO_RESUME true to continue that run"
        )


def _official_epoch(state: dict[str, Any], path: Path) -> int:
    """The ``epoch`` of an official-layout checkpoint (index of its last completed epoch), checked."""
    epoch = state.get("epoch")
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1 and not epoch.is_floating_point():
        epoch = int(epoch.item())
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
        return epoch
    found = "has no 'epoch'" if epoch is None else f"has 'epoch' {str(epoch)[:40]!r}, not an index >= 0"
    raise EngineError(
        f"cannot auto-resume from {path}: it {found} (official checkpoints record the index of the last "
        f"completed epoch there), so where to continue is unknown. To train from its weights, set "
        f"TRAIN.CHECKPOINT_FILE_PATH to it with TRAIN.FINE_TUNE true and use a new OUTPUT_DIR"
    )


def _start(
    cfg: Config,
    ctx: DistContext,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    iters_per_epoch: int,
) -> tuple[_Position, dict[str, Any] | None]:
    """Load the starting weights (first match wins) and return the schedule position.

    Returns the position and, for an exact resume, the saved RNG states to install right before
    the first iteration.
    """
    latest = ckpt.latest_checkpoint(cfg.OUTPUT_DIR) if cfg.TRAIN.AUTO_RESUME else None
    if latest is not None:
        return _resume(cfg, ctx, latest=latest, model=model, optimizer=optimizer, scaler=scaler,
                       iters_per_epoch=iters_per_epoch)
    if cfg.TRAIN.CHECKPOINT_FILE_PATH:
        pos = _start_from_file(cfg, model=model, optimizer=optimizer, iters_per_epoch=iters_per_epoch)
    elif cfg.TRAIN.INIT == "in1k":
        pos = _start_from_in1k(cfg, model)
    elif cfg.TRAIN.INIT == "clip":
        pos = _start_from_clip(cfg, model)
    else:
        pos = _Position(start="random init (TRAIN.INIT is '' and there is no checkpoint)")
    log.info("%s", pos.start)
    return pos, None


def _read_for_resume(latest: ckpt.CheckpointInfo, out: Path) -> dict[str, Any]:
    """The newest checkpoint's content; an unreadable one is an error that names the one before it."""
    try:
        return ckpt.read_checkpoint(latest.path)
    except CheckpointError as err:
        older = [c.path.name for c in ckpt.list_checkpoints(out) if c.path != latest.path]
        hint = f"; the one before it is {older[-1]}" if older else ""
        raise EngineError(
            f"cannot auto-resume: the newest checkpoint is unreadable ({err}). Nothing was deleted: "
            f"move {latest.path.name} away to resume from the previous checkpoint{hint}, or set "
            f"TRAIN.AUTO_RESUME false with a new OUTPUT_DIR"
        ) from err


def _resume(
    cfg: Config,
    ctx: DistContext,
    *,
    latest: ckpt.CheckpointInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    iters_per_epoch: int,
) -> tuple[_Position, dict[str, Any] | None]:
    """Auto-resume from the newest checkpoint in OUTPUT_DIR: ours at its iteration, an official
    file at the start of the epoch after it."""
    out = Path(cfg.OUTPUT_DIR)
    state = _read_for_resume(latest, out)
    check_resume_config(cfg, state.get("cfg"), path=latest.path, strict=state.get("tada") is not None)
    try:
        model.load_state_dict(state["model_state"], strict=True)
        optimizer.load_state_dict(state["optimizer_state"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise EngineError(
            f"cannot resume from {latest.path}: it does not fit this run's model or optimizer (did the "
            f"config change?); use a new OUTPUT_DIR or set TRAIN.AUTO_RESUME false. Detail: "
            f"{str(err).strip().splitlines()[0][:500]}"
        ) from err
    extra = state.get("tada")
    if extra is None:  # an official checkpoint dropped into OUTPUT_DIR: epoch granularity
        epoch = _official_epoch(state, latest.path)
        pos = _Position(epoch=epoch + 1, global_step=(epoch + 1) * iters_per_epoch)
        pos.start = f"auto-resume from {latest.path} (official file: epoch {pos.epoch})"
        pos.ema_state = state.get("model_ema_state")
        log.info("%s", pos.start)
        return pos, None
    if extra["iters_per_epoch"] != iters_per_epoch:
        raise EngineError(
            f"{latest.path} was written with {extra['iters_per_epoch']} iterations per epoch, this run has "
            f"{iters_per_epoch}: the dataset or TRAIN.BATCH_SIZE changed; use a new OUTPUT_DIR"
        )
    if scaler is not None and extra.get("scaler"):
        scaler.load_state_dict(extra["scaler"])
    pos = _Position(
        epoch=int(extra["next_epoch"]),
        iteration=int(extra["iteration"]),
        global_step=int(extra["global_step"]),
        train_seconds=float(extra["train_seconds"]),
        best=extra.get("best"),
        ema_state=state.get("model_ema_state"),
    )
    pos.start = f"auto-resume from {latest.path} (epoch {pos.epoch + 1}, iteration {pos.iteration})"
    log.info("%s", pos.start)
    if pos.best and pos.best.get("epochs_done") == latest.epochs_done and latest.is_epoch_end and ctx.is_master:
        ckpt.link_best(latest.path, out)  # a run killed between writing the checkpoint and linking best
    rng = extra.get("rng") or []
    if len(rng) != ctx.world_size:
        log.warning(
            "the checkpoint holds random states of %d processes, this run has %d: the data order and "
            "augmentations continue exactly, dropout draws do not", len(rng), ctx.world_size,
        )
        return pos, None
    return pos, rng[ctx.rank]


def _start_from_file(
    cfg: Config, *, model: nn.Module, optimizer: torch.optim.Optimizer, iters_per_epoch: int
) -> _Position:
    """TRAIN.CHECKPOINT_FILE_PATH: its weights only (TRAIN.FINE_TUNE), else weights and optimizer
    at the epoch after the file's."""
    path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    if not Path(path).is_file():
        raise EngineError(f"TRAIN.CHECKPOINT_FILE_PATH: file not found: {path}")
    if cfg.TRAIN.FINE_TUNE:
        loaded = ckpt.load_checkpoint(model, path, strict=False)
        foreign = [
            k for k in loaded.missing_keys + loaded.unexpected_keys + loaded.mismatched_keys
            if not k.startswith("head.")
        ]
        if foreign:
            raise EngineError(f"{path}: does not fit the model outside the head: {foreign[:10]}")
        note = " (head re-initialised: its shape differs)" if loaded.mismatched_keys else ""
        return _Position(start=f"fine-tune from {path}: weights only, from epoch 1{note}")
    loaded = ckpt.load_checkpoint(model, path, strict=True, optimizer=optimizer)
    ours = loaded.extra.get("tada")
    if isinstance(ours, dict) and int(ours.get("iteration", 0)) > 0:
        raise EngineError(
            f"TRAIN.CHECKPOINT_FILE_PATH {path} was written mid-epoch (epoch {int(ours['next_epoch']) + 1}, "
            f"iteration {ours['iteration']}): continuing from it would train part of that epoch twice. "
            f"Copy it into OUTPUT_DIR/checkpoints to auto-resume at that iteration, or use an epoch-end "
            f"checkpoint (or TRAIN.FINE_TUNE true for its weights only)"
        )
    epoch = -1 if loaded.epoch is None else loaded.epoch
    pos = _Position(epoch=epoch + 1, global_step=(epoch + 1) * iters_per_epoch)
    pos.start = f"continue from {path}: weights and optimizer, at epoch {pos.epoch + 1}"
    return pos


def _start_from_in1k(cfg: Config, model: nn.Module) -> _Position:
    """TRAIN.INIT in1k: the backbone from a local ImageNet state dict of its 2-D counterpart."""
    weights = cfg.require("TRAIN.IN1K_WEIGHTS", "TRAIN.INIT is in1k: a local ImageNet state-dict file of the "
                          "backbone (a torchvision/timm ResNet-50, or a ConvNeXt-V1 of the model's size)")
    if not Path(weights).is_file():
        raise EngineError(f"TRAIN.IN1K_WEIGHTS: file not found: {weights}")
    report = ckpt.load_in1k(model, weights)
    return _Position(
        start=f"ImageNet init from {weights}: {len(report.loaded)} tensors loaded, "
        f"{len(report.missing)} kept their init (routing, temporal-pool BN, head)"
    )


def _start_from_clip(cfg: Config, model: nn.Module) -> _Position:
    """TRAIN.INIT clip: the backbone from a local OpenAI CLIP ViT file."""
    from tada.models.clip import load_clip

    weights = cfg.require("TRAIN.CLIP_WEIGHTS", "TRAIN.INIT is clip: a local OpenAI CLIP ViT file")
    if not Path(weights).is_file():
        raise EngineError(f"TRAIN.CLIP_WEIGHTS: file not found: {weights}")
    report = load_clip(model, weights)
    return _Position(
        start=f"CLIP init from {weights}: {len(report.loaded)} tensors loaded, "
        f"{len(report.missing)} kept their init (TAda branches, head)"
    )


# --------------------------------------------------------------------------------------------
# Validation (deterministic, single view, each sample once)
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Any,
    *,
    ctx: DistContext,
    precision: Any,
    gpu_transform: Callable | None = None,
    cfg: Config | None = None,
) -> dict[str, float]:
    """Loss, top-1 and top-5 (%) over the whole split, summed exactly across ranks (:class:`ValMeter`)."""
    was_training = model.training
    model.eval()
    meter = ValMeter(ctx)
    for batch in loader:
        if "failed" in batch:
            keep = ~batch["failed"].bool()
            meter.add_failed(int((~keep).sum()))
            if not keep.any():
                continue
            batch = _select(batch, keep)
        video, labels = _to_device(batch, ctx.device, gpu_transform=gpu_transform, cfg=cfg)
        with autocast(precision, ctx.device):
            logits = model(video)
        meter.update(logits.float(), labels)
    model.train(was_training)
    return meter.summary()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(
    cfg: Config,
    *,
    ctx: DistContext | None = None,
    model_fn: Callable[[Config], nn.Module] | None = None,
    dataset_fn: Callable[[Config, str], Any] | None = None,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train as ``cfg`` says, in ``cfg.OUTPUT_DIR``; see the module docstring.

    ``model_fn(cfg)`` and ``dataset_fn(cfg, split)`` default to :func:`tada.models.build_model` and
    :func:`tada.data.build_dataset`. ``stop_after_steps`` ends the call after that many global
    steps (benchmarks), without a final checkpoint.
    """
    own_ctx = ctx is None
    ctx = ctx or init_distributed(cfg.NUM_GPUS, cfg.DIST_BACKEND)
    check_train_config(cfg, ctx.world_size)
    model_fn = model_fn or default_model_fn
    dataset_fn = dataset_fn or default_dataset_fn
    # Data first: a missing list or key fails before OUTPUT_DIR is touched or a model is built.
    train_set = dataset_fn(cfg, "train")
    val_set = dataset_fn(cfg, "val") if int(cfg.TRAIN.EVAL_PERIOD) > 0 else None
    out = Path(cfg.OUTPUT_DIR)
    try:
        with exclusive_output_dir(out, ctx, command=describe_command()):
            _refuse_foreign_checkpoints(cfg, out)
            if ctx.is_master:
                ckpt.checkpoint_dir(out).mkdir(parents=True, exist_ok=True)
                ckpt.remove_stale_temporaries(out)
            show_bar = ctx.is_master and _terminal_width() >= 40
            undo_logging = setup_logging(out / cfg.TRAIN.LOG_FILE, master=ctx.is_master,
                                         console_iterations=not show_bar)
            stats = StatsWriter(out, enabled=ctx.is_master)
            try:
                # SIGINT/SIGTERM: a checkpoint at the next safe point, then stop
                with StopSignals(escalate=not ctx.distributed) as stops:
                    run = _prepare(cfg, ctx, model_fn=model_fn, train_set=train_set, stats=stats, stops=stops,
                                   show_bar=show_bar, stop_after_steps=stop_after_steps)
                    if run.pos.epoch >= run.max_epoch:
                        return _already_finished(run)
                    _prepare_loop(run, train_set=train_set, val_set=val_set)
                    return _train(run)
            finally:
                stats.close()
                undo_logging()
    finally:
        if own_ctx:
            from tada.engine.distributed import shutdown

            shutdown(ctx)


def scheduled_epoch(epochs_done: int, *, period: int, max_epoch: int) -> bool:
    """Whether epoch ``epochs_done`` (1-based) is a checkpoint (or evaluation) epoch.

    Every ``period`` epochs, the last one, and every one of the last 11 (best.pyth is picked there).
    """
    return epochs_done % max(period, 1) == 0 or epochs_done == max_epoch or epochs_done >= max_epoch - 10


@dataclass
class _Run:
    """One training call: the parts :func:`_prepare` and :func:`_prepare_loop` build, the position
    the loop advances, and the bookkeeping of this call (its checkpoints, steps and clock)."""

    cfg: Config
    ctx: DistContext
    model: nn.Module  # the plain module: checkpoints, EMA and validation read it
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    precision: Precision
    ema: ModelEma | None
    sampler: TrainSampler
    pos: _Position
    rng_state: dict[str, Any] | None  # the resumed checkpoint's random states of this rank
    meter: TrainMeter
    stats: StatsWriter
    stops: StopSignals
    model_info: dict[str, Any]
    stop_after_steps: int | None
    net: nn.Module | None = None  # what the step calls: the model, or DDP / torch.compile around it
    loader: Any = None
    val_loader: Any = None
    gpu_transform: Callable | None = None
    mixer: Mixer | None = None
    criterion: nn.Module | None = None
    graphed: Any = None  # GraphedTrainStep with TRAIN.CUDA_GRAPHS
    last_path: Path | None = None
    steps_this_call: int = 0
    session_start: float = 0.0
    seconds_at_start: float = 0.0

    @property
    def out(self) -> Path:
        return Path(self.cfg.OUTPUT_DIR)

    @property
    def ipe(self) -> int:
        return self.sampler.iters_per_epoch

    @property
    def max_epoch(self) -> int:
        return int(self.cfg.OPTIMIZER.MAX_EPOCH)

    def clock(self) -> None:
        """Bring the position's training time up to now."""
        self.pos.train_seconds = self.seconds_at_start + time.perf_counter() - self.session_start

    def result(self) -> TrainResult:
        return TrainResult(self.out, self.last_path, True, self.max_epoch, self.pos.train_seconds, self.pos.best,
                           self.pos.start)


def _prepare(
    cfg: Config,
    ctx: DistContext,
    *,
    model_fn: Callable,
    train_set: Any,
    stats: StatsWriter,
    stops: StopSignals,
    show_bar: bool,
    stop_after_steps: int | None,
) -> _Run:
    """Model, optimizer and starting position (resumed, loaded or initialised); the config saved."""
    out = Path(cfg.OUTPUT_DIR)
    device = ctx.device
    log.info("output: %s; %d process(es) on %s", out.resolve(), ctx.world_size, device)
    if cfg.LOG_CONFIG_INFO:
        log.info("resolved config (also in %s):\n%s", out / "config.yaml", cfg.dump())
    global_batch = int(cfg.TRAIN.BATCH_SIZE)
    sampler = TrainSampler(len(train_set), global_batch=global_batch, rank=ctx.rank,
                           world_size=ctx.world_size, seed=int(cfg.RANDOM_SEED))
    log.info("train: %d clips, global batch %d (%d per process), %d iterations per epoch",
             len(train_set), global_batch, sampler.local_batch, sampler.iters_per_epoch)

    # The same initial weights on every rank (DDP also broadcasts rank 0's).
    torch.manual_seed(int(cfg.RANDOM_SEED))
    model = model_fn(cfg).to(device)
    if cfg.BN.SYNC and ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    precision = resolve_precision(cfg.TRAIN.AMP, device)
    scaler = torch.amp.GradScaler(device.type) if precision.scaler else None
    optimizer = build_optimizer(model, cfg.OPTIMIZER, cfg.BN, only_linear=cfg.TRAIN.ONLY_LINEAR,
                                lr_reduce=cfg.TRAIN.LR_REDUCE and cfg.TRAIN.FINE_TUNE,
                                num_layers=_num_layers(cfg.VIDEO.BACKBONE.DEPTH))
    configure_backends(device, deterministic=cfg.TRAIN.DETERMINISTIC)
    model_info = _log_model_info(cfg, model, device=device) if cfg.LOG_MODEL_INFO and ctx.is_master else {}
    pos, rng_state = _start(cfg, ctx, model=model, optimizer=optimizer, scaler=scaler,
                            iters_per_epoch=sampler.iters_per_epoch)
    ema = _start_ema(cfg, model, pos=pos)
    if ctx.is_master:  # only now: a refused resume leaves the config of the run it refused to extend
        save_config(cfg, out / "config.yaml")
    stats.truncate_after(pos.global_step)
    meter = TrainMeter(ctx=ctx, iters_per_epoch=sampler.iters_per_epoch, max_epoch=int(cfg.OPTIMIZER.MAX_EPOCH),
                       stats=stats, show_bar=show_bar, clip_grad_norm=float(cfg.OPTIMIZER.CLIP_GRAD_NORM))
    return _Run(cfg=cfg, ctx=ctx, model=model, optimizer=optimizer, scaler=scaler, precision=precision, ema=ema,
                sampler=sampler, pos=pos, rng_state=rng_state, meter=meter, stats=stats, stops=stops,
                model_info=model_info, stop_after_steps=stop_after_steps)


def _already_finished(run: _Run) -> TrainResult:
    pos = run.pos
    log.info("training already finished (%d/%d epochs); nothing to train", pos.epoch, run.max_epoch)
    latest = ckpt.latest_checkpoint(run.out)
    last = latest.path if latest else None
    return TrainResult(run.out, last, False, run.max_epoch, pos.train_seconds, pos.best, pos.start)


def _prepare_loop(run: _Run, *, train_set: Any, val_set: Any) -> None:
    """The training random stream, the wrapped network, the loaders and the step's parts."""
    cfg, ctx, device = run.cfg, run.ctx, run.ctx.device
    seed = int(cfg.RANDOM_SEED)
    # The training stream (dropout) differs per rank; a resume continues the saved one.
    torch.manual_seed(mix_seed(seed, ctx.rank, 0x7A1))
    if run.rng_state is not None:
        ckpt.restore_rng(run.rng_state, device)

    run.net = run.model
    if ctx.distributed:
        ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
        run.net = nn.parallel.DistributedDataParallel(run.model, **ddp_kwargs)
    if cfg.TRAIN.COMPILE:
        run.net = torch.compile(run.net)
    if cfg.AUGMENTATION.USE_GPU:
        from tada.data import gpu_transform

        run.gpu_transform = gpu_transform
    from tada.data import build_loader

    pin_memory = True if device.type == "cuda" else None  # asynchronous copies whatever the config says
    run.loader = build_loader(cfg, "train", dataset=SeededDataset(train_set), sampler=run.sampler, rank=ctx.rank,
                              world_size=ctx.world_size, seed=seed, pin_memory=pin_memory)
    if val_set is not None:
        val_sampler = EvalSampler(len(val_set), rank=ctx.rank, world_size=ctx.world_size, seed=seed)
        run.val_loader = build_loader(cfg, "val", dataset=SeededDataset(val_set), sampler=val_sampler,
                                      rank=ctx.rank, world_size=ctx.world_size, seed=seed, pin_memory=pin_memory)

    log.info("precision %s; start %s; epochs %d..%d", run.precision.label, run.pos.start, run.pos.epoch + 1,
             run.max_epoch)
    if run.model_info:
        run.stats.write("model_info", run.model_info, step=run.pos.global_step)
    run.mixer = mixer_from_config(cfg.AUGMENTATION, cfg.VIDEO.HEAD.NUM_CLASSES)
    # Mixed batches carry soft targets that already hold the label smoothing.
    run.criterion = nn.CrossEntropyLoss(label_smoothing=0.0 if run.mixer else float(cfg.AUGMENTATION.LABEL_SMOOTHING))
    if cfg.TRAIN.CUDA_GRAPHS:  # one GPU, no DDP or compile (check_train_config): net is model
        from tada.engine.graphs import GraphedTrainStep

        precision, scaler = run.precision, run.scaler
        run.graphed = GraphedTrainStep(
            run.model, run.criterion,
            autocast=lambda cache_enabled: autocast(precision, device, cache_enabled=cache_enabled),
            scale=scaler.scale if scaler is not None else (lambda loss: loss),
        )


def _train(run: _Run) -> TrainResult:
    """The epochs from the starting position to OPTIMIZER.MAX_EPOCH, then the run's summary."""
    run.session_start = time.perf_counter()
    run.seconds_at_start = run.pos.train_seconds
    run.net.train()
    for epoch in range(run.pos.epoch, run.max_epoch):
        if not _train_epoch(run, epoch):
            return run.result()  # stop_after_steps reached
        _end_epoch(run)
    return _finish(run)


def _train_epoch(run: _Run, epoch: int) -> bool:
    """The iterations of ``epoch`` from the position's; False when stop_after_steps ended the call."""
    pos = run.pos
    start_iter = pos.iteration if epoch == pos.epoch else 0
    pos.epoch, pos.iteration = epoch, start_iter
    run.sampler.set_epoch(epoch, start_iter)
    run.meter.start_epoch(epoch, start_iter=start_iter)
    fetch_start = time.perf_counter()
    for batch in _batches(run.loader, run.stops):
        # Data wait is the time the loader kept the step waiting. The device copy and, with
        # AUGMENTATION.USE_GPU, the GPU decode/resize are device work queued behind the last
        # step: they count as compute (a GPU decode waits for the GPU, not for the loader).
        run.meter.add_data_wait(time.perf_counter() - fetch_start)
        _train_step(run, batch)
        if not _after_step(run):
            return False
        fetch_start = time.perf_counter()
    run.meter.close_bar()
    if pos.iteration != run.ipe and run.stops.signum is not None:  # its workers got the signal too
        raise _stop_here(run, run.stops.signum)
    if pos.iteration != run.ipe:
        raise EngineError(
            f"epoch {epoch + 1} ended after {pos.iteration} of {run.ipe} iterations (the loader stopped early)"
        )
    return True


def _train_step(run: _Run, batch: dict) -> None:
    """One optimizer step on ``batch`` at the position's learning rate; the position advances."""
    cfg, ctx, pos, device = run.cfg, run.ctx, run.pos, run.ctx.device
    video, labels = _to_device(batch, device, gpu_transform=run.gpu_transform, cfg=cfg)
    targets = labels
    if run.mixer is not None:  # the step's own seed: a resumed run mixes as an uninterrupted one
        rng = np.random.default_rng(mix_seed(int(cfg.RANDOM_SEED), ctx.rank, pos.global_step, 0x313))
        video, targets = run.mixer(video, labels, rng=rng)
    position = epoch_position(pos.epoch, pos.iteration, iters_per_epoch=run.ipe)
    set_lr(run.optimizer, lr_from_config(cfg.OPTIMIZER, position, global_batch=int(cfg.TRAIN.BATCH_SIZE)))
    if run.graphed is not None:  # forward+backward replayed; the gradients are overwritten in place
        logits, loss = run.graphed(video, labels)
    else:
        with autocast(run.precision, device):
            logits = run.net(video)
        loss = run.criterion(logits.float(), targets)
        run.optimizer.zero_grad(set_to_none=True)
        (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
    grad_norm = clip_gradients(run.optimizer, float(cfg.OPTIMIZER.CLIP_GRAD_NORM), scaler=run.scaler)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.meter.update(loss=loss, logits=logits, labels=labels, global_step=pos.global_step, grad_norm=grad_norm)
    pos.iteration += 1
    pos.global_step += 1
    run.steps_this_call += 1


def _after_step(run: _Run) -> bool:
    """Log, checkpoint and honour a stop request where they are due; False when stop_after_steps
    ends the call."""
    pos, log_period = run.pos, int(run.cfg.LOG_PERIOD)
    iter_period = int(run.cfg.TRAIN.CHECKPOINT_ITER_PERIOD)
    epoch_end = pos.iteration == run.ipe
    if pos.iteration % log_period == 0 or epoch_end:
        _flush(run)
    if iter_period and pos.global_step % iter_period == 0 and not epoch_end:
        _flush(run)  # the NaN check guards the file
        run.clock()
        _save(run, is_best=False)
    if not epoch_end and (not run.ctx.distributed or pos.iteration % log_period == 0):
        signum = run.stops.agreed(run.ctx)  # ranks agree where they already synchronise
        if signum:
            raise _stop_here(run, signum)
    if run.stop_after_steps is not None and run.steps_this_call >= run.stop_after_steps:
        _flush(run)
        run.meter.close_bar()
        run.clock()
        return False
    return True


def _base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's learning rate (the first group's, without its multiplier)."""
    return optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_mult", 1.0)


def _flush(run: _Run) -> None:
    """Read the meter's window (one host sync, all-reduced), stop on a non-finite loss, log it."""
    pos, ipe = run.pos, run.ipe
    first_bad = run.meter.sync()
    if first_bad is not None:
        bad_epoch, bad_iter = divmod(first_bad, ipe)
        latest = ckpt.latest_checkpoint(run.out)
        raise NonFiniteLossError(
            f"the loss became NaN/inf at epoch {bad_epoch + 1}, iteration {bad_iter + 1}/{ipe} "
            f"(global step {first_bad + 1}); training stopped. The last good checkpoint is "
            f"{latest.path if latest else 'none'}: lower OPTIMIZER.BASE_LR or use TRAIN.AMP off"
        )
    run.meter.log_window(iteration=pos.iteration, global_step=pos.global_step, lr=_base_lr(run.optimizer))


def _stop_here(run: _Run, signum: int) -> Exception:
    """Save a resumable checkpoint at this position (unless just written) and say how to resume."""
    pos = run.pos
    _flush(run)  # the NaN check guards the file
    run.meter.close_bar()
    run.clock()
    if run.last_path != ckpt.checkpoint_path(run.out, pos.epoch, iteration=pos.iteration):
        _save(run, is_best=False)
    return StopSignals.interrupted(signum, where=f"epoch {pos.epoch + 1}, iteration {pos.iteration}/{run.ipe}",
                                   checkpoint=run.last_path, auto_resume=run.cfg.TRAIN.AUTO_RESUME)


def _end_epoch(run: _Run) -> None:
    """Epoch records, validation, the epoch's checkpoint and a stop request at the epoch's end."""
    cfg, pos = run.cfg, run.pos
    epochs_done = pos.epoch + 1
    train_record = run.meter.epoch_record(lr=_base_lr(run.optimizer))
    is_best, val_record = False, None
    eval_epoch = scheduled_epoch(epochs_done, period=int(cfg.TRAIN.EVAL_PERIOD), max_epoch=run.max_epoch)
    if run.val_loader is not None and eval_epoch:
        is_best, val_record = _validate_epoch(run, epochs_done)
    pos.epoch, pos.iteration = epochs_done, 0
    run.clock()
    train_record["train_seconds"] = pos.train_seconds
    run.stats.write("train_epoch", train_record, step=pos.global_step)
    if val_record is not None:
        run.stats.write("val_epoch", val_record, step=pos.global_step)
    iter_period = int(cfg.TRAIN.CHECKPOINT_ITER_PERIOD)
    checkpoint_epoch = scheduled_epoch(epochs_done, period=int(cfg.TRAIN.CHECKPOINT_PERIOD),
                                       max_epoch=run.max_epoch)
    if checkpoint_epoch or is_best or (iter_period and pos.global_step % iter_period == 0):
        _save(run, is_best=is_best)
    signum = run.stops.agreed(run.ctx) if epochs_done < run.max_epoch else None
    if signum:
        if run.last_path != ckpt.checkpoint_path(run.out, epochs_done):
            _save(run, is_best=False)
        raise StopSignals.interrupted(signum, where=f"the end of epoch {epochs_done}", checkpoint=run.last_path,
                                      auto_resume=cfg.TRAIN.AUTO_RESUME)


def _validate_epoch(run: _Run, epochs_done: int) -> tuple[bool, dict[str, Any]]:
    """Validate the model (and its EMA); whether it is a new best, and the ``val_epoch`` record."""
    ctx, pos = run.ctx, run.pos
    # The plain module: a DDP forward broadcasts buffers, a collective that would hang when
    # ranks hold different numbers of val batches. Rank 0's BN statistics go to every rank first.
    broadcast_buffers(ctx, run.model)
    val = validate(run.model, run.val_loader, ctx=ctx, precision=run.precision, gpu_transform=run.gpu_transform,
                   cfg=run.cfg)
    best_top1 = pos.best["top1"] if pos.best else -math.inf
    is_best = val["top1"] > best_top1
    if is_best:
        pos.best = {"top1": val["top1"], "top5": val["top5"], "epochs_done": epochs_done}
    val_record = {"epoch": epochs_done, **val, "best_top1": max(val["top1"], best_top1)}
    log.info("val epoch %d: loss %.4f top1 %.2f%% top5 %.2f%% (%d clips, best top1 %.2f%%)",
             epochs_done, val["loss"], val["top1"], val["top5"], val["num_clips"], val_record["best_top1"])
    if val["nonfinite_clips"]:
        log.warning("val epoch %d: %d clip(s) gave non-finite logits (counted as wrong, left out of "
                    "the loss)", epochs_done, val["nonfinite_clips"])
    if run.ema is not None:
        broadcast_buffers(ctx, run.ema.module)
        val_ema = validate(run.ema.module, run.val_loader, ctx=ctx, precision=run.precision,
                           gpu_transform=run.gpu_transform, cfg=run.cfg)
        val_record.update({f"ema_{k}": val_ema[k] for k in ("loss", "top1", "top5")})
        log.info("val epoch %d (EMA weights): loss %.4f top1 %.2f%% top5 %.2f%%", epochs_done,
                 val_ema["loss"], val_ema["top1"], val_ema["top5"])
    return is_best, val_record


def _finish(run: _Run) -> TrainResult:
    """train_summary.json and the curves (rank 0), the closing log line, the result."""
    pos = run.pos
    if run.ctx.is_master:
        summary = {
            "finished": True,
            "epochs": run.max_epoch,
            "train_seconds": pos.train_seconds,
            "best_val": pos.best,
            "last_checkpoint": str(run.last_path) if run.last_path else None,
            "start": pos.start,
            "world_size": run.ctx.world_size,
            "precision": run.precision.label,
            **run.model_info,
        }
        write_json_atomic(run.out / "train_summary.json", summary)
        write_curves(read_stats(run.stats.path), run.out / "plots")
    log.info("training finished: %d epochs in %s (this call %s)", run.max_epoch, hms(pos.train_seconds),
             hms(time.perf_counter() - run.session_start))
    return run.result()


# --------------------------------------------------------------------------------------------
# Checkpoint writing
# --------------------------------------------------------------------------------------------
def _save(run: _Run, *, is_best: bool) -> Path:
    """Write the checkpoint for the current position (all ranks call; rank 0 writes); it becomes
    the run's last checkpoint.

    Weights that are no longer finite (a last step with NaN gradients but a finite loss) are
    never written: the previous checkpoint stays the last good one.
    """
    cfg, ctx, model, pos = run.cfg, run.ctx, run.model, run.pos
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()  # one host sync
    if not bool(finite.item()):
        latest = ckpt.latest_checkpoint(cfg.OUTPUT_DIR)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        when = f"epoch {pos.epoch + 1}, iteration {pos.iteration}" if pos.iteration else f"the end of epoch {pos.epoch}"
        raise NonFiniteLossError(
            f"the weights became NaN/inf by {when} ({', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}); nothing was saved. The last good checkpoint is "
            f"{latest.path if latest else 'none'}: lower OPTIMIZER.BASE_LR or use TRAIN.AMP off"
        )
    rng = all_gather_objects(ctx, ckpt.capture_rng(ctx.device))
    out = Path(cfg.OUTPUT_DIR)
    epochs_done = pos.epoch  # full epochs behind this position (mid-epoch: the one in progress is not)
    path = ckpt.checkpoint_path(out, epochs_done, iteration=pos.iteration)
    if ctx.is_master:
        state = {
            "model_state": unwrap(model).state_dict(),
            "optimizer_state": run.optimizer.state_dict(),
            "epoch": epochs_done - 1,  # official meaning: 0-based index of the last completed epoch
            "cfg": json.dumps(cfg.to_dict(), indent=2),
            **({"model_ema_state": run.ema.state_dict()} if run.ema is not None else {}),
            "tada": {
                "format": 1,
                "next_epoch": pos.epoch,
                "iteration": pos.iteration,
                "global_step": pos.global_step,
                "iters_per_epoch": run.ipe,
                "train_seconds": pos.train_seconds,
                "best": pos.best,
                "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                "rng": rng,
                "world_size": ctx.world_size,
            },
        }
        ckpt.save_atomic(state, path)
        if is_best:
            ckpt.link_best(path, out)
        ckpt.prune_checkpoints(out, cfg.TRAIN.KEEP_LAST)
        log.info("checkpoint %s%s", path, " (new best)" if is_best else "")
    barrier(ctx)
    run.last_path = path
    return path


def _batches(loader: Any, stops: StopSignals):
    """The loader's batches. After a stop request, a loader whose worker processes died of the same
    signal ends instead of failing: the step before was complete, the loop saves there."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError:
            if stops.signum is None:
                raise
            return
        yield batch


def _num_layers(depth: Any) -> int | None:
    """VIDEO.BACKBONE.DEPTH as the layer count of layer-wise LR decay: an int (ViT depth), else None
    (per-stage lists have no single layer count; layer-wise decay then refuses to run)."""
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else None


def _start_ema(cfg: Config, model: nn.Module, *, pos: _Position) -> ModelEma | None:
    """MODEL.EMA: the average continues a resumed one, else starts as a copy of the starting weights."""
    if not cfg.MODEL.EMA.ENABLE:
        return None
    from tada.models.convert import official_filter

    ema = ModelEma(model, float(cfg.MODEL.EMA.DECAY))
    if pos.ema_state is not None:
        try:
            ema.load_state_dict(official_filter(pos.ema_state))  # wrapper prefixes ("module.") removed
        except RuntimeError as err:
            raise EngineError(f"cannot resume the model EMA: model_ema_state does not fit the model: "
                              f"{str(err).strip().splitlines()[0][:300]}") from err
    elif pos.start.startswith("auto-resume"):
        log.warning("MODEL.EMA: the resumed checkpoint has no model_ema_state; the average starts from its weights")
    pos.ema_state = None
    return ema


def _terminal_width() -> int:
    """Columns of the terminal on stderr; 0 when stderr is a file, a pipe or a sizeless pty."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns if sys.stderr.isatty() else 0
    except (OSError, ValueError):
        return 0

