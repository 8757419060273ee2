"""`tada train` (= `python runs/run.py`) and `tada test`.

``tada train --cfg FILE [KEY VALUE ...]``: train if TRAIN.ENABLE, then if TEST.ENABLE the test
with the config's own views (TEST.NUM_ENSEMBLE_VIEWS x TEST.NUM_SPATIAL_CROPS, 1x1 in the zoo) and,
if TEST.AUTOMATIC_MULTI_SCALE_TEST, the multi-view test (TEST.MULTI_VIEW_ENSEMBLE_VIEWS x
TEST.MULTI_VIEW_SPATIAL_CROPS). OUTPUT_DIR/results.json (the last test's results) marks a finished
run; running the same command again resumes, or skips what is already done.

``tada test --cfg FILE``: only the tests, of TEST.CHECKPOINT_FILE_PATH, else the last checkpoint in
OUTPUT_DIR, else TRAIN.CHECKPOINT_FILE_PATH; no checkpoint is an error.

Processes: NUM_GPUS processes per node (0 = one CPU process). With NUM_GPUS > 1 the command
re-launches itself through torch's elastic launcher. Several nodes: run the same command on each
node with ``--nnodes N --node_rank R --master_addr HOST --master_port PORT`` (or
``--rdzv_endpoint HOST:PORT`` on all nodes), or the seed's NUM_SHARDS/SHARD_ID keys with
``--init_method tcp://HOST:PORT``. Several CPU processes: ``torchrun --standalone
--nproc_per_node P -m tada train --cfg FILE NUM_GPUS 0`` (gloo).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tada.cli import add_cfg_arguments
from tada.config import Config, load_config, save_config
from tada.config.schema import multi_view_protocol
from tada.engine.distributed import (
    EngineError,
    all_gather_objects,
    check_devices,
    in_launched_worker,
    init_distributed,
    launch,
    shutdown,
)
from tada.engine.ownership import describe_command, exclusive_output_dir

__all__ = ["add_arguments", "preflight", "run", "run_pipeline", "run_tests"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    dist = parser.add_argument_group("multi-node (torchrun rendezvous; flags go before the KEY VALUE overrides)")
    dist.add_argument("--init_method", default=None, metavar="tcp://HOST:PORT",
                      help="seed-compatible: rank-0 node address for NUM_SHARDS > 1 (ignored on one node)")
    dist.add_argument("--nnodes", type=int, default=None, help="number of nodes (default: NUM_SHARDS)")
    dist.add_argument("--node_rank", type=int, default=None, help="this node's rank (default: SHARD_ID)")
    dist.add_argument("--master_addr", default=None, help="address of the rank-0 node (static rendezvous)")
    dist.add_argument("--master_port", type=int, default=None, help="port on the rank-0 node (default 29500)")
    dist.add_argument("--rdzv_endpoint", default=None, metavar="HOST:PORT", help="c10d rendezvous endpoint")
    dist.add_argument("--rdzv_backend", default=None, help="rendezvous backend (default c10d)")
    dist.add_argument("--rdzv_id", default=None, help="job id shared by all nodes")
    add_cfg_arguments(parser)


def preflight(cfg: Config, command: str) -> None:
    """Checks that need no data or model: unset data keys, missing GPUs. Clear messages, fast."""
    cfg.require("DATA.DATA_ROOT_DIR", "the folder holding the videos; DATA.ANNO_DIR defaults to it")
    check_devices(cfg.NUM_GPUS)


def _rendezvous(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    nnodes = args.nnodes if args.nnodes is not None else int(cfg.NUM_SHARDS)
    node_rank = args.node_rank if args.node_rank is not None else int(cfg.SHARD_ID)
    addr, port = args.master_addr, args.master_port
    if args.init_method and nnodes > 1 and not (addr or args.rdzv_endpoint):
        parsed = urlparse(args.init_method)
        if parsed.scheme != "tcp" or not parsed.hostname:
            raise EngineError(f"--init_method must look like tcp://HOST:PORT, got {args.init_method}")
        addr, port = parsed.hostname, parsed.port
    return dict(nnodes=nnodes, node_rank=node_rank, master_addr=addr, master_port=port,
                rdzv_endpoint=args.rdzv_endpoint, rdzv_backend=args.rdzv_backend, rdzv_id=args.rdzv_id)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.cfg, args.opts)
    preflight(cfg, args.command)
    rdzv = _rendezvous(args, cfg)
    if not in_launched_worker() and (cfg.NUM_GPUS > 1 or rdzv["nnodes"] > 1):
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        try:
            launch([args.command, "--cfg", args.cfg, *args.opts], nproc_per_node=max(cfg.NUM_GPUS, 1), **rdzv)
        except ChildFailedError as err:
            print(f"tada {args.command}: a worker process failed; its error is above. ({err.name})", file=sys.stderr)
            return 1
        except SignalException as err:  # the workers got it too: what they saved is reported above
            print(f"tada {args.command}: stopped by {signal.Signals(err.sigval).name}", file=sys.stderr)
            return 128 + int(err.sigval)
        return 0
    ctx = init_distributed(cfg.NUM_GPUS, cfg.DIST_BACKEND)
    try:
        if args.command == "train":
            run_pipeline(cfg, ctx=ctx)
        else:
            run_tests(cfg, ctx=ctx)
    finally:
        shutdown(ctx)
    return 0


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
