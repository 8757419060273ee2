"""The whole run of a config: train, then test, as `tada train` and `tada test` do.

:func:`run_pipeline` trains if TRAIN.ENABLE, then if TEST.ENABLE tests with the config's own views
(TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS, 1x1 in the zoo) and, if
TEST.AUTOMATIC_MULTI_SCALE_TEST, the multi-view test (TEST.MULTI_VIEW_ENSEMBLE_VIEWS x
TEST.MULTI_VIEW_SPATIAL_CROPS). OUTPUT_DIR/results.json (the last test's results) marks a finished
run; running it again resumes, or skips what is already done. :func:`run_tests` runs only the
tests, of TEST.CHECKPOINT_FILE_PATH, else the last checkpoint in OUTPUT_DIR, else
TRAIN.CHECKPOINT_FILE_PATH; no checkpoint is an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tada.config import Config, save_config
from tada.config.schema import multi_view_protocol
from tada.engine.distributed import all_gather_objects, init_distributed, shutdown
from tada.engine.ownership import describe_command, exclusive_output_dir

__all__ = ["run_pipeline", "run_tests"]

log = logging.getLogger(__name__)


def _protocols(cfg: Config) -> list[tuple[int, int]]:
    """The tests a run performs, in order: the config's own views, then the automatic multi-view."""
    protocols = [(int(cfg.TEST.NUM_ENSEMBLE_VIEWS), int(cfg.TEST.NUM_SPATIAL_CROPS))]
    if cfg.TEST.AUTOMATIC_MULTI_SCALE_TEST:
        multi = multi_view_protocol(cfg)
        if multi not in protocols:
            protocols.append(multi)
    return protocols


def _finish(cfg: Config, final: dict[str, Any] | None, ctx) -> None:
    """OUTPUT_DIR/results.json = the last test's results (written last: it marks a finished run)."""
    if final is None or not ctx.is_master:
        return
    from tada.engine.reporting import write_json_atomic

    write_json_atomic(Path(cfg.OUTPUT_DIR) / "results.json", final)


def run_tests(cfg: Config, *, ctx=None, reuse_finished: bool = False, train_seconds: float | None = None,
              **fns: Any) -> dict[str, Any] | None:
    """Every test protocol of the config on the resolved checkpoint; returns the last results (rank 0).

    ``reuse_finished`` skips a protocol whose results.json was computed from the same checkpoint
    file (path, size, mtime) with the same config, which makes re-running a finished run cheap.
    OUTPUT_DIR is locked while the tests run (:func:`tada.engine.ownership.exclusive_output_dir`).
    """
    from tada.engine.evaluate import checkpoint_identity, resolve_test_checkpoint

    own = ctx is None
    ctx = ctx or init_distributed(cfg.NUM_GPUS, cfg.DIST_BACKEND)
    lock = contextlib.ExitStack()
    try:
        path, why = resolve_test_checkpoint(cfg)
        lock.enter_context(exclusive_output_dir(cfg.OUTPUT_DIR, ctx, command=describe_command()))
        ident = checkpoint_identity(path)
        extra = {"train_seconds": train_seconds if train_seconds is not None else _train_seconds(cfg)}
        final = None
        # With MODEL.EMA each protocol is repeated on the checkpoint's EMA weights (test_VxC_ema).
        weights = ("model", "ema") if cfg.MODEL.EMA.ENABLE else ("model",)
        for views, crops in _protocols(cfg):
            for kind in weights:
                result = _run_protocol(cfg, ctx, path=path, why=why, ident=ident, extra=extra, views=views,
                                       crops=crops, weights=kind, reuse_finished=reuse_finished, fns=fns)
                if result is not None and kind == "model":
                    final = result
        _finish(cfg, final, ctx)
        return final
    finally:
        lock.close()
        if own:
            shutdown(ctx)


def _run_protocol(cfg: Config, ctx, *, path: Path, why: str, ident: dict[str, Any], extra: dict[str, Any],
                  views: int, crops: int, weights: str, reuse_finished: bool, fns: dict[str, Any]):
    """One test protocol on one kind of weights, or its saved results when they are still valid."""
    from tada.engine.evaluate import test, test_dir, tested_as_now

    folder = test_dir(cfg.OUTPUT_DIR, views, crops, weights)
    previous = folder / "results.json"
    tested_with = folder / "config.yaml"
    old = None
    if reuse_finished and previous.is_file() and tested_with.is_file():
        old = json.loads(previous.read_text())
        # the same checkpoint file and the same config (test scale, views, aggregation, ...)
        if not (old.get("checkpoint_identity") == ident and tested_with.read_text() == cfg.dump()
                and tested_as_now(old)):
            old = None
    # Rank 0 decides for all: a rank deciding alone could leave the others waiting in the test.
    old = all_gather_objects(ctx, old)[0]
    if old is not None:
        print(f"[tada] test {views}x{crops} ({weights} weights): already done with {path}; reusing {previous}",
              file=sys.stderr)
        return old
    if ctx.is_master:  # the test's own config; OUTPUT_DIR/config.yaml stays the training's
        save_config(cfg, tested_with)
    return test(cfg, views=views, crops=crops, checkpoint=path, checkpoint_choice=why, ctx=ctx, extra=extra,
                weights=weights, **fns)


def _train_seconds(cfg: Config) -> float | None:
    summary = Path(cfg.OUTPUT_DIR) / "train_summary.json"
    if summary.is_file():
        return json.loads(summary.read_text()).get("train_seconds")
    return None


def run_pipeline(cfg: Config, *, ctx=None, **fns: Any) -> dict[str, Any] | None:
    """`tada train`: train (TRAIN.ENABLE), then the tests (TEST.ENABLE); see the module docstring."""
    from tada.engine.trainer import train

    own = ctx is None
    ctx = ctx or init_distributed(cfg.NUM_GPUS, cfg.DIST_BACKEND)
    try:
        trained, train_seconds = True, None
        if cfg.TRAIN.ENABLE:
            result = train(cfg, ctx=ctx, **fns)
            trained, train_seconds = result.trained, result.train_seconds
        if not cfg.TEST.ENABLE:
            return None
        return run_tests(cfg, ctx=ctx, reuse_finished=not trained, train_seconds=train_seconds, **fns)
    finally:
        if own:
            shutdown(ctx)
