"""Process topology: which rank this process is, on which device, and how to reach the others.

A run is one process (CPU or one GPU) or a torchrun job: ``NUM_GPUS`` processes per node, NCCL on
GPUs, gloo on CPUs. ``tada train`` with ``NUM_GPUS > 1`` re-launches itself through torch's elastic
launcher (:func:`launch`); inside a torchrun worker (``LOCAL_RANK`` set) nothing is re-launched.
A CPU job of several processes is started with torchrun directly and ``NUM_GPUS 0``::

    torchrun --standalone --nproc_per_node 2 -m tada train --cfg FILE NUM_GPUS 0
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tada.errors import TadaError

__all__ = [
    "DistContext",
    "EngineError",
    "all_gather_objects",
    "all_reduce",
    "barrier",
    "broadcast_buffers",
    "check_devices",
    "in_launched_worker",
    "init_distributed",
    "launch",
    "shutdown",
]


class EngineError(TadaError, RuntimeError):
    """A run cannot start or continue; the message says what to change."""


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def in_launched_worker() -> bool:
    """True inside a process started by torchrun (or any launcher that sets LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_devices(num_gpus: int) -> None:
    """Fail with a clear message when the config asks for GPUs this machine does not have."""
    if num_gpus < 0:
        raise EngineError(f"NUM_GPUS must be >= 0 (0 = CPU), got {num_gpus}")
    if num_gpus == 0:
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible == 0:
        raise EngineError(
            f"NUM_GPUS is {num_gpus} but no CUDA device is visible on this machine: "
            "add `NUM_GPUS 0` to the command line to run on the CPU"
        )
    if in_launched_worker():
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", num_gpus))
        if local_world > visible:
            raise EngineError(f"{local_world} processes per node but only {visible} CUDA device(s) visible")
        return
    if num_gpus > visible:
        raise EngineError(
            f"NUM_GPUS is {num_gpus} but only {visible} CUDA device(s) are visible: "
            f"set NUM_GPUS {visible} (or 0 for the CPU)"
        )


def init_distributed(num_gpus: int, backend: str = "nccl") -> DistContext:
    """Set this process's device and join the process group when launched with several processes."""
    check_devices(num_gpus)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if num_gpus == 0:
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        chosen = backend if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": chosen, "init_method": "env://", "rank": rank, "world_size": world_size}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce(ctx: DistContext, tensor: torch.Tensor, *, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum, min or max) across ranks; a no-op in a single process."""
    if ctx.distributed:
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (picklable objects)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running statistics) so evaluation agrees everywhere."""
    if not ctx.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def launch(
    argv: Sequence[str],
    *,
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_backend: str | None = None,
    rdzv_id: str | None = None,
) -> None:
    """Run ``python -m tada <argv>`` in ``nproc_per_node`` processes through torch's elastic launcher.

    One node uses a free port (``--standalone``), never a fixed one. Several nodes use the standard
    torchrun rendezvous: either ``master_addr``/``master_port`` with ``node_rank`` (static), or a
    ``rdzv_endpoint`` (c10d) shared by all nodes.
    """
    from torch.distributed import run as torchrun

    args: list[str] = ["--nproc_per_node", str(nproc_per_node), "--nnodes", str(nnodes)]
    if nnodes == 1 and not (master_addr or rdzv_endpoint):
        args.append("--standalone")
    elif rdzv_endpoint:
        args += ["--rdzv_backend", rdzv_backend or "c10d", "--rdzv_endpoint", rdzv_endpoint]
        args += ["--rdzv_id", rdzv_id or "tada"]
    else:
        if not master_addr:
            raise EngineError(
                f"{nnodes} nodes need a rendezvous: pass --master_addr HOST --master_port PORT "
                "--node_rank R (or --rdzv_endpoint HOST:PORT) on every node"
            )
        args += ["--node_rank", str(node_rank), "--master_addr", master_addr]
        args += ["--master_port", str(master_port or 29500)]
    args += ["-m", "tada", *argv]
    torchrun.main(args)
