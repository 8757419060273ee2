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
from dataclasses import dataclass
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
from tada.engine.runtime import autocast, configure_backends, default_dataset_fn, default_model_fn, resolve_precision
from tada.engine.samplers import EvalSampler, SeededDataset

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


def _as_list(value: Any, n: int, *, default: Any) -> list[Any]:
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
        return _test(cfg, ctx, out=out, views=views, crops=crops, checkpoint=checkpoint,
                     checkpoint_choice=checkpoint_choice, model_fn=model_fn or default_model_fn,
                     dataset_fn=dataset_fn or default_dataset_fn, extra={**(extra or {}), "weights": weights})
    finally:
        undo_logging()
        if own_ctx:
            from tada.engine.distributed import shutdown

            shutdown(ctx)


@dataclass
class _TestSet:
    """The test split of one protocol: ``views`` clips x ``crops`` crops of each video, in the
    layout ``index = video_index * num_views + view``."""

    cfg: Config  # the run's config with the protocol's TEST.NUM_ENSEMBLE_VIEWS / NUM_SPATIAL_CROPS
    dataset: Any
    views: int
    crops: int
    num_videos: int
    class_names: list[str]

    @property
    def num_views(self) -> int:
        return self.views * self.crops


@dataclass
class _ViewScorer:
    """The model in eval mode and how a batch reaches it; turns a batch into per-view contributions."""

    model: nn.Module
    cfg: Config
    device: torch.device
    precision: Any
    gpu_transform: Callable | None
    method: str

    def contributions(self, batch: dict, *, failed: list[bool]) -> np.ndarray | None:
        """(B, classes) float64 contributions of the items that decoded (zeros for the others);
        None when none did."""
        n = len(failed)
        ok = [j for j in range(n) if not failed[j]]
        if not ok:
            return None
        if self.gpu_transform is not None:
            video = self.gpu_transform(batch, self.cfg, self.device)["video"]
        else:
            video = batch["video"].to(self.device, non_blocking=True)
        if len(ok) < n:
            video = video[torch.tensor(ok, device=video.device)]
        with autocast(self.precision, self.device):
            logits = self.model(video)
        # Non-finite logits stay non-finite in the video's scores: summarise_videos counts that
        # video as wrong (NaN would otherwise rank as class 0 and could count as correct).
        part = aggregate_views(logits.float(), self.method).cpu().numpy()
        contribution = np.zeros((n, part.shape[1]), dtype=np.float64)
        contribution[ok] = part
        return contribution


def _check_test_request(cfg: Config, *, views: int, crops: int) -> str:
    """The aggregation method, after the protocol and the config's test keys are checked."""
    if views < 1 or crops < 1:
        raise EngineError(f"test views must be >= 1 clips x >= 1 crops, got {views}x{crops}")
    require_implemented(cfg, TEST_KEY_PREFIXES, EngineError)
    method = cfg.DATA.ENSEMBLE_METHOD
    if method not in AGGREGATIONS:
        raise EngineError(f"DATA.ENSEMBLE_METHOD must be one of {sorted(AGGREGATIONS)}, got {method!r}")
    return method


def _test_set(cfg: Config, dataset_fn: Callable, *, views: int, crops: int) -> _TestSet:
    """The protocol's test dataset, checked against the view layout."""
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
    return _TestSet(cfg=test_cfg, dataset=dataset, views=views, crops=crops, num_videos=num_videos,
                    class_names=class_names)


def _test(cfg: Config, ctx: DistContext, *, out: Path, views: int, crops: int,
          checkpoint: str | os.PathLike | None, checkpoint_choice: str, model_fn: Callable, dataset_fn: Callable,
          extra: dict[str, Any]) -> dict[str, Any] | None:
    method = _check_test_request(cfg, views=views, crops=crops)
    if checkpoint is None:
        path, why = resolve_test_checkpoint(cfg)
    else:
        path, why = Path(checkpoint), checkpoint_choice
        if not path.is_file():
            raise EngineError(f"checkpoint to test not found: {path}")
    tests = _test_set(cfg, dataset_fn, views=views, crops=crops)
    device = ctx.device
    configure_backends(device, deterministic=cfg.TRAIN.DETERMINISTIC)
    torch.manual_seed(int(cfg.RANDOM_SEED))
    model = model_fn(cfg).to(device)
    loaded = ckpt.load_checkpoint(model, path, strict=True, state_key=WEIGHTS[extra.get("weights", "model")])
    model.eval()
    log.info("testing %s (%s, epoch %s) on %d videos x %d views (%dx%d), aggregation %s, %d process(es)",
             path, why, "?" if loaded.epoch is None else loaded.epoch + 1, tests.num_videos, tests.num_views, views,
             crops, AGGREGATIONS[method], ctx.world_size)
    gpu_transform = None
    if cfg.AUGMENTATION.USE_GPU:
        from tada.data import gpu_transform  # type: ignore[attr-defined]
    scorer = _ViewScorer(model=model, cfg=cfg, device=device, precision=resolve_precision(cfg.TRAIN.AMP, device),
                         gpu_transform=gpu_transform, method=method)
    agg, seconds = _score_views(ctx, tests, scorer=scorer)
    parts = all_gather_objects(ctx, agg.state())
    if not ctx.is_master:
        return None
    merged = VideoAggregator(tests.num_views, method)
    merged.merge(parts)
    results, rows = summarise_videos(merged, num_videos=tests.num_videos, class_names=tests.class_names)
    results.update(
        {
            "views": tests.num_views,
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
            "clips_per_s": len(tests.dataset) / seconds if seconds > 0 else None,
            "world_size": ctx.world_size,
            "dataset": cfg.TEST.DATASET,
            **extra,
        }
    )
    _write_results(out, results=results, rows=rows, tests=tests, title=cfg.MODEL.NAME, seconds=seconds)
    return results


def _score_views(ctx: DistContext, tests: _TestSet, *, scorer: _ViewScorer) -> tuple[VideoAggregator, float]:
    """This rank's share of the test views, scored into a :class:`VideoAggregator`; and the seconds it took."""
    seed = int(scorer.cfg.RANDOM_SEED)
    sampler = EvalSampler(len(tests.dataset), rank=ctx.rank, world_size=ctx.world_size, seed=seed)
    from tada.data import build_loader

    loader = build_loader(tests.cfg, "test", dataset=SeededDataset(tests.dataset), sampler=sampler, rank=ctx.rank,
                          world_size=ctx.world_size, seed=seed, pin_memory=True if ctx.device.type == "cuda" else None)
    agg = VideoAggregator(tests.num_views, scorer.method)
    started = time.perf_counter()
    log_every = max(len(loader) // 10, 5)
    for i, batch in enumerate(loader):
        _add_batch(agg, batch, scorer=scorer, num_views=tests.num_views)
        if ctx.is_master and (i + 1) % log_every == 0:
            log.info("test %dx%d: batch %d/%d", tests.views, tests.crops, i + 1, len(loader))
    return agg, time.perf_counter() - started


def _add_batch(agg: VideoAggregator, batch: dict, *, scorer: _ViewScorer, num_views: int) -> None:
    """Score one batch and add its views (failed ones with their reason) to ``agg``."""
    n = len(batch["label"])
    failed = _as_list(batch.get("failed"), n, default=False)
    contribution = scorer.contributions(batch, failed=failed)
    index = _as_list(batch["index"], n, default=None)
    video_index = _as_list(batch["video_index"], n, default=None) if "video_index" in batch else None
    if video_index is None:
        video_index = [i // num_views for i in index]
    elif any(v != i // num_views for v, i in zip(video_index, index)):
        raise EngineError("test items break the layout index = video_index * views + view")
    agg.add(
        video_index=video_index,
        view=[i % num_views for i in index],
        label=_as_list(batch["label"], n, default=None),
        path=_as_list(batch.get("path"), n, default=""),
        contribution=contribution,
        failed=failed,
        error=_as_list(batch.get("error"), n, default=""),
    )


def _write_results(out: Path, *, results: dict[str, Any], rows: list[dict[str, Any]], tests: _TestSet, title: str,
                   seconds: float) -> None:
    """predictions.csv, confusion.png and results.json in ``out``; the summary and failures logged."""
    views, crops = tests.views, tests.crops
    write_predictions_csv(out / "predictions.csv", rows)
    write_confusion_png(out / "confusion.png", results["confusion_matrix"], class_names=tests.class_names,
                        title=f"{title} {views}x{crops}: top-1 {_fmt(results['top1'])}%")
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


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
