"""The multi-view test: V temporal clips x S spatial crops per video, aggregated, written to disk.

Views come from the config (TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS for the single-view
test, TEST.MULTI_VIEW_* for the automatic multi-view one), never from the dataset's name. Every
view is scored exactly once across ranks (contiguous shards, no padding); a video with a view that
failed to decode is listed, with the reason, and not scored. A test without a checkpoint is an
error, never a random model.

Files in ``OUTPUT_DIR/test_{V}x{S}/``: results.json, predictions.csv, confusion.png, test.log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tada.config import Config
from tada.config.schema import TEST_KEY_PREFIXES, require_implemented
from tada.engine import checkpointing as ckpt
from tada.engine.distributed import DistContext, EngineError, all_gather_objects, init_distributed
from tada.engine.metrics import AGGREGATIONS, VideoAggregator, aggregate_views, summarise_videos
from tada.engine.reporting import (
    setup_logging,
    write_confusion_png,
    write_json_atomic,
    write_predictions_csv,
)
from tada.engine.runtime import autocast, build_loader, configure_backends, resolve_precision
from tada.engine.sampling import EvalSampler

__all__ = ["TEST_PROTOCOL_VERSION", "checkpoint_identity", "resolve_test_checkpoint", "test", "test_dir",
           "tested_as_now"]

# Bumped whenever the frames or crops a test reads change for the same config, so that saved
# results of an older tada are not reused (2: SSv2 / segment multi-view positions as the official;
# 3: a video with non-finite scores counts as wrong).
TEST_PROTOCOL_VERSION = 3


def tested_as_now(results: dict[str, Any]) -> bool:
    """Whether saved test results were computed the way this tada tests (else they are recomputed)."""
    return results.get("test_protocol_version") == TEST_PROTOCOL_VERSION


log = logging.getLogger(__name__)


WEIGHTS = {"model": None, "ema": "model_ema_state"}  # which weights of a checkpoint a test reads


def test_dir(output_dir: str | os.PathLike, views: int, crops: int, weights: str = "model") -> Path:
    return Path(output_dir) / f"test_{views}x{crops}{'' if weights == 'model' else '_' + weights}"


def resolve_test_checkpoint(cfg: Config) -> tuple[Path, str]:
    """(checkpoint, why it was chosen): TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in
    OUTPUT_DIR, else TRAIN.CHECKPOINT_FILE_PATH; an error if none exists."""
    given = cfg.TEST.CHECKPOINT_FILE_PATH
    if given:
        if not Path(given).is_file():
            raise EngineError(f"TEST.CHECKPOINT_FILE_PATH: file not found: {given}")
        return Path(given), "TEST.CHECKPOINT_FILE_PATH"
    latest = ckpt.latest_checkpoint(cfg.OUTPUT_DIR)
    if latest is not None:
        if latest.is_epoch_end:
            detail = f"end of epoch {latest.epochs_done}"
        else:
            detail = f"mid-epoch: epoch {latest.epochs_done + 1}, iteration {latest.iteration}"
        return latest.path, f"the last checkpoint in OUTPUT_DIR ({detail})"
    train_path = cfg.TRAIN.CHECKPOINT_FILE_PATH
    if train_path:
        if not Path(train_path).is_file():
            raise EngineError(f"TRAIN.CHECKPOINT_FILE_PATH: file not found: {train_path}")
        return Path(train_path), "TRAIN.CHECKPOINT_FILE_PATH"
    raise EngineError(
        f"no checkpoint to test: set TEST.CHECKPOINT_FILE_PATH, or train into OUTPUT_DIR "
        f"({cfg.OUTPUT_DIR}) first; a randomly initialised model is never tested"
    )


def checkpoint_identity(path: Path) -> dict[str, Any]:
    """What identifies a checkpoint file cheaply: its resolved path, size and modification time."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _default_model_fn(cfg: Config) -> nn.Module:
    from tada.models import build_model

    return build_model(cfg)


def _default_dataset_fn(cfg: Config, split: str) -> Any:
    from tada.data import build_dataset

    return build_dataset(cfg, split)


def _as_list(value: Any, n: int, default: Any) -> list[Any]:
    if value is None:
        return [default] * n
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return list(value)


@torch.no_grad()
def test(
    cfg: Config,
    *,
    views: int,
    crops: int,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_choice: str = "given",
    ctx: DistContext | None = None,
    model_fn: Callable[[Config], nn.Module] | None = None,
    dataset_fn: Callable[[Config, str], Any] | None = None,
    extra: dict[str, Any] | None = None,
    weights: str = "model",
) -> dict[str, Any] | None:
    """Test a checkpoint with ``views`` clips x ``crops`` crops; returns results.json's content on rank 0.

    ``checkpoint`` defaults to :func:`resolve_test_checkpoint`. ``extra`` entries (e.g. the
    training time) are added to results.json. ``weights`` 'ema' tests the checkpoint's
    ``model_ema_state`` (MODEL.EMA) instead of its model weights, into ``test_VxC_ema``.
    """
    if weights not in WEIGHTS:
        raise EngineError(f"test weights must be one of {sorted(WEIGHTS)}, got {weights!r}")
    own_ctx = ctx is None
    ctx = ctx or init_distributed(cfg.NUM_GPUS, cfg.DIST_BACKEND)
    out = test_dir(cfg.OUTPUT_DIR, views, crops, weights)
    if ctx.is_master:
        out.mkdir(parents=True, exist_ok=True)
    undo_logging = setup_logging(out / "test.log", master=ctx.is_master, console_iterations=True)
    try:
        return _test(cfg, ctx, views, crops, checkpoint, checkpoint_choice, model_fn or _default_model_fn,
                     dataset_fn or _default_dataset_fn, {**(extra or {}), "weights": weights}, out)
    finally:
        undo_logging()
        if own_ctx:
            from tada.engine.distributed import shutdown

            shutdown(ctx)


def _test(cfg, ctx, views, crops, checkpoint, checkpoint_choice, model_fn, dataset_fn, extra,
          out) -> dict[str, Any] | None:
    from tada.checkpoint import load_checkpoint

    if views < 1 or crops < 1:
        raise EngineError(f"test views must be >= 1 clips x >= 1 crops, got {views}x{crops}")
    require_implemented(cfg, TEST_KEY_PREFIXES, EngineError)
    method = cfg.DATA.ENSEMBLE_METHOD
    if method not in AGGREGATIONS:
        raise EngineError(f"DATA.ENSEMBLE_METHOD must be one of {sorted(AGGREGATIONS)}, got {method!r}")
    if checkpoint is None:
        path, why = resolve_test_checkpoint(cfg)
    else:
        path, why = Path(checkpoint), checkpoint_choice
        if not path.is_file():
            raise EngineError(f"checkpoint to test not found: {path}")
    test_cfg = cfg.with_overrides({"TEST.NUM_ENSEMBLE_VIEWS": views, "TEST.NUM_SPATIAL_CROPS": crops})
    dataset = dataset_fn(test_cfg, "test")
    num_views = views * crops
    dataset_views = getattr(dataset, "num_views", num_views)
    if dataset_views != num_views:
        raise EngineError(f"the test dataset has {dataset_views} views per video, expected {views}x{crops}")
    num_videos = int(getattr(dataset, "num_videos", len(dataset) // num_views))
    if len(dataset) != num_videos * num_views:
        raise EngineError(
            f"the test dataset has {len(dataset)} items, expected {num_videos} videos x {num_views} views"
        )
    class_names = list(getattr(dataset, "class_names", None) or [str(i) for i in range(cfg.VIDEO.HEAD.NUM_CLASSES)])

    device = ctx.device
    configure_backends(device, deterministic=cfg.TRAIN.DETERMINISTIC)
    torch.manual_seed(int(cfg.RANDOM_SEED))
    model = model_fn(cfg).to(device)
    loaded = load_checkpoint(model, path, strict=True, state_key=WEIGHTS[extra.get("weights", "model")])
    model.eval()
    log.info("testing %s (%s, epoch %s) on %d videos x %d views (%dx%d), aggregation %s, %d process(es)",
             path, why, "?" if loaded.epoch is None else loaded.epoch + 1, num_videos, num_views, views, crops,
             AGGREGATIONS[method], ctx.world_size)
    precision = resolve_precision(cfg.TRAIN.AMP, device)
    sampler = EvalSampler(len(dataset), rank=ctx.rank, world_size=ctx.world_size, seed=int(cfg.RANDOM_SEED))
    loader = build_loader(dataset, split="test", sampler=sampler, cfg=test_cfg, ctx=ctx, seed=int(cfg.RANDOM_SEED))
    gpu_transform = None
    if cfg.AUGMENTATION.USE_GPU:
        from tada.data import gpu_transform  # type: ignore[attr-defined]

    agg = VideoAggregator(num_views, method)
    started = time.perf_counter()
    log_every = max(len(loader) // 10, 5)
    clips = 0
    for i, batch in enumerate(loader):
        n = len(batch["label"])
        failed = _as_list(batch.get("failed"), n, False)
        errors = _as_list(batch.get("error"), n, "")
        contribution = None
        ok = [j for j in range(n) if not failed[j]]
        if ok:
            if gpu_transform is not None:
                video = gpu_transform(batch, cfg, device)["video"]
            else:
                video = batch["video"].to(device, non_blocking=True)
            if len(ok) < n:
                video = video[torch.tensor(ok, device=video.device)]
            with autocast(precision, device):
                logits = model(video)
            # Non-finite logits stay non-finite in the video's scores: summarise_videos counts that
            # video as wrong (NaN would otherwise rank as class 0 and could count as correct).
            part = aggregate_views(logits.float(), method).cpu().numpy()
            contribution = np.zeros((n, part.shape[1]), dtype=np.float64)
            contribution[ok] = part
        index = _as_list(batch["index"], n, None)
        video_index = _as_list(batch["video_index"], n, None) if "video_index" in batch else None
        if video_index is None:
            video_index = [i // num_views for i in index]
        elif any(v != i // num_views for v, i in zip(video_index, index)):
            raise EngineError("test items break the layout index = video_index * views + view")
        agg.add(
            video_index=video_index,
            view=[i % num_views for i in index],
            label=_as_list(batch["label"], n, None),
            path=_as_list(batch.get("path"), n, ""),
            contribution=contribution,
            failed=failed,
            error=errors,
        )
        clips += n
        if ctx.is_master and (i + 1) % log_every == 0:
            log.info("test %dx%d: batch %d/%d", views, crops, i + 1, len(loader))
    seconds = time.perf_counter() - started
    parts = all_gather_objects(ctx, agg.state())
    if not ctx.is_master:
        return None
    merged = VideoAggregator(num_views, method)
    merged.merge(parts)
    results, rows = summarise_videos(merged, num_videos=num_videos, class_names=class_names)
    results.update(
        {
            "views": num_views,
            "protocol": f"{views}x{crops}",
            "ensemble_views": views,
            "spatial_crops": crops,
            "aggregation": AGGREGATIONS[method],
            "checkpoint": str(path),
            "checkpoint_choice": why,
            "checkpoint_epoch": None if loaded.epoch is None else loaded.epoch + 1,
            "checkpoint_identity": checkpoint_identity(path),
            "test_protocol_version": TEST_PROTOCOL_VERSION,
            "test_seconds": seconds,
            "clips_per_s": len(dataset) / seconds if seconds > 0 else None,
            "world_size": ctx.world_size,
            "dataset": cfg.TEST.DATASET,
            **extra,
        }
    )
    write_predictions_csv(out / "predictions.csv", rows)
    write_confusion_png(out / "confusion.png", results["confusion_matrix"], class_names,
                        f"{cfg.MODEL.NAME} {views}x{crops}: top-1 {_fmt(results['top1'])}%")
    write_json_atomic(out / "results.json", results)
    log.info("test %dx%d: top1 %s%% top5 %s%% mean class acc %s%% over %d videos (%d failed) in %.1f s -> %s",
             views, crops, _fmt(results["top1"]), _fmt(results["top5"]), _fmt(results["mean_class_accuracy"]),
             results["num_videos"], len(results["failed_videos"]), seconds, out)
    for failure in results["failed_videos"][:20]:
        log.warning("not scored: %s (%s)", failure["path"], failure["reason"])
    if results["nonfinite_videos"]:
        log.warning("test %dx%d: %d video(s) got non-finite logits and count as wrong (the model overflows on them "
                    "in eval mode), e.g. %s", views, crops, len(results["nonfinite_videos"]),
                    results["nonfinite_videos"][0]["path"])
    return results


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
