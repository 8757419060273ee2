"""A training process for the engine tests (SIGKILL resume, torchrun), on the in-memory stand-ins.

    python tests/engine/engine_worker.py [--delay S] [--model M] [--real-data] [--train-only]
        [--block-at-step N MARKER] [--bug-runs DIR] OUT_DIR [KEY VALUE ...]

``--real-data`` reads the videos the config names (DATA.DATA_ROOT_DIR ...) instead of the stand-in clips.

``--block-at-step N MARKER`` writes the file MARKER and then waits forever in the N-th training
forward pass of this process: a test kills it there, at a known step, however loaded the machine.

``--bug-runs DIR`` then trains the same config again, in the same process group, once per
deliberate distributed bug (:data:`BUGS`), each into ``DIR/<bug>``: the tests prove with them that
their comparison of an N-process run with a 1-process run would catch that bug.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_standins import NoBNNet, NoBNNet64, dataset_fn_factory, tiny_cfg  # noqa: E402

from tada.cli import run_and_exit  # noqa: E402
from tada.engine import run_pipeline, train  # noqa: E402
from tada.engine import trainer as trainer_module  # noqa: E402
from tada.engine.distributed import init_distributed, shutdown  # noqa: E402
from tada.errors import TadaError  # noqa: E402

MODELS = {"tada": None, "nobn": NoBNNet, "nobn64": NoBNNet64}


def _sum_without_division(state, bucket):
    """A DDP communication hook that all-reduces the gradients without dividing by the world size."""
    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda done: done.value()[0])


class _SummingDDP(torch.nn.parallel.DistributedDataParallel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_comm_hook(None, _sum_without_division)


@contextlib.contextmanager
def _undivided() -> Iterator[list[str]]:
    with mock.patch.object(torch.nn.parallel, "DistributedDataParallel", _SummingDDP):
        yield []


@contextlib.contextmanager
def _same_shard_everywhere() -> Iterator[list[str]]:
    real = trainer_module.TrainSampler

    def rank0_sampler(*args, **kwargs):
        return real(*args, **{**kwargs, "rank": 0})

    with mock.patch.object(trainer_module, "TrainSampler", rank0_sampler):
        yield []


@contextlib.contextmanager
def _double_lr() -> Iterator[list[str]]:
    yield ["OPTIMIZER.BASE_LR", "0.1"]  # tiny_cfg's 0.05, doubled


BUGS: dict[str, Callable[[], contextlib.AbstractContextManager[list[str]]]] = {
    "undivided_gradients": _undivided,
    "same_shard_on_every_rank": _same_shard_everywhere,
    "doubled_lr": _double_lr,
}


def _blocking_at_step(model_fn: Callable | None, step: int, marker: Path) -> Callable:
    """``model_fn`` whose model, in its ``step``-th training forward pass, writes ``marker`` and hangs.

    A forward pre-hook: the state dict, the computation and the random streams stay the model's own.
    """
    from tada.models import build_model

    def build(cfg):
        model = (model_fn or build_model)(cfg)
        calls = 0

        def hook(module, args):
            nonlocal calls
            if module.training:
                calls += 1
                if calls == step:
                    marker.write_text(f"blocked before training step {step}\n")
                    while True:
                        time.sleep(60)

        model.register_forward_pre_hook(hook)
        return model

    return build


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per item (to make a kill land mid-epoch)")
    parser.add_argument("--model", choices=sorted(MODELS), default="tada", help="the stand-in model")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--real-data", action="store_true", help="the config's videos, not the stand-in clips")
    parser.add_argument("--block-at-step", nargs=2, metavar=("N", "MARKER"),
                        help="write MARKER and hang in the N-th training forward pass")
    parser.add_argument("--bug-runs", help="then train once per deliberate bug, into this folder")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = ["TEST.ENABLE", "false"] if args.train_only else []
    cfg = tiny_cfg(args.out, *extra, *args.opts)
    fns = {} if args.real_data else {"dataset_fn": dataset_fn_factory(delay=args.delay, num_val=9, num_test=5)}
    if MODELS[args.model] is not None:
        fns["model_fn"] = MODELS[args.model]
    if args.block_at_step:
        fns["model_fn"] = _blocking_at_step(MODELS[args.model], int(args.block_at_step[0]),
                                            Path(args.block_at_step[1]))
    ctx = init_distributed(cfg.NUM_GPUS, cfg.DIST_BACKEND)
    try:
        run_pipeline(cfg, ctx=ctx, **fns)
        for name, bug in BUGS.items() if args.bug_runs else ():
            with bug() as bug_opts:
                bug_cfg = tiny_cfg(Path(args.bug_runs) / name, "TEST.ENABLE", "false", *args.opts, *bug_opts)
                train(bug_cfg, ctx=ctx, **fns)
    except TadaError as exc:  # as `tada train` reports it
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    finally:
        shutdown(ctx)
    return 0


if __name__ == "__main__":
    run_and_exit(main)
