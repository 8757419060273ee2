"""`tada train` (= `python runs/run.py`) and `tada test`: the flags, processes and nodes.

``tada train --cfg FILE [KEY VALUE ...]`` runs :func:`tada.engine.run_pipeline` (train, then the
tests the config asks for); ``tada test --cfg FILE`` runs :func:`tada.engine.run_tests`.

Processes: NUM_GPUS processes per node (0 = one CPU process). With NUM_GPUS > 1 the command
re-launches itself through torch's elastic launcher. Several nodes: run the same command on each
node with ``--nnodes N --node_rank R --master_addr HOST --master_port PORT`` (or
``--rdzv_endpoint HOST:PORT`` on all nodes), or the seed's NUM_SHARDS/SHARD_ID keys with
``--init_method tcp://HOST:PORT``. Several CPU processes: ``torchrun --standalone
--nproc_per_node P -m tada train --cfg FILE NUM_GPUS 0`` (gloo).
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any
from urllib.parse import urlparse

from tada.cli import add_cfg_arguments
from tada.config import Config, load_config
from tada.engine.distributed import EngineError, check_devices, in_launched_worker, init_distributed, launch, shutdown
from tada.engine.pipeline import run_pipeline, run_tests

__all__ = ["add_arguments", "preflight", "run"]


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
