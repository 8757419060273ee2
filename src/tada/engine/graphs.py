"""A train step's forward, loss and backward captured in one CUDA graph (``TRAIN.CUDA_GRAPHS``).

TAda2D launches about 2,300 kernels per train step, many of them tiny (the routing function of
16 blocks, forward and backward); in eager mode the host cannot launch them as fast as an H100
runs them, and the step is host-bound (measured: 77 ms eager, 47 ms replayed from a graph, 16
clips x 8 x 224, bf16). A graph replays the whole step with one launch.

The optimizer step stays outside the graph (the learning rate changes every iteration). The
gradients live in the graph's memory and are overwritten, not accumulated, at every replay, so
the optimizer must never drop them (no ``zero_grad(set_to_none=True)`` in between).

Keep ``torch.cuda.empty_cache()`` away while a graph is alive: on an H100 with torch 2.11, a
benchmark that called it between graph captures hit an illegal memory access at the first replay
(a graph replays with cuBLAS workspace memory it does not own; see pytorch/pytorch#193402).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["GraphedTrainStep"]


class GraphedTrainStep:
    """``step(video, labels) -> (logits, loss)``: copy the batch in, replay, return the graph's outputs.

    The step computes ``logits = model(video)`` under ``autocast`` (a factory, called with
    ``cache_enabled=False`` inside the capture) and ``loss = criterion(logits.float(), labels)``.
    ``scale(loss)`` maps the loss before backward (a GradScaler's ``scale``, or identity).
    The first call warms up on a side stream (three forward+backward passes on the first batch,
    the model's buffers (BN running statistics) restored afterwards), then captures. Dropout
    draws a different random stream than in eager mode, so a run with graphs is reproducible
    but not bit-identical to one without. A batch of another shape is an error: the train
    sampler gives every iteration the same shape.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Callable[[Tensor, Tensor], Tensor],
        *,
        autocast: Callable[..., object],
        scale: Callable[[Tensor], Tensor] = lambda loss: loss,
        warmup: int = 3,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.autocast = autocast
        self.scale = scale
        self.warmup = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, Tensor] = {}

    def _fwd_bwd(self, video: Tensor, labels: Tensor, *, cache_enabled: bool) -> tuple[Tensor, Tensor]:
        with self.autocast(cache_enabled=cache_enabled):
            logits = self.model(video)
        loss = self.criterion(logits.float(), labels)
        self.scale(loss).backward()
        return logits, loss

    def _capture(self, video: Tensor, labels: Tensor) -> None:
        if video.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need the batch on a CUDA device, got {video.device}")
        params = [p for p in self.model.parameters() if p.requires_grad]
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        self.static = {"video": video.clone(), "labels": labels.clone()}
        side = torch.cuda.Stream(video.device)
        side.wait_stream(torch.cuda.current_stream(video.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                for p in params:
                    p.grad = None
                self._fwd_bwd(self.static["video"], self.static["labels"], cache_enabled=True)
        torch.cuda.current_stream(video.device).wait_stream(side)
        for p in params:
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the DataLoader's pin-memory thread keeps allocating pinned memory and
            # querying events while this thread captures; in "global" mode that breaks the capture.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                logits, loss = self._fwd_bwd(self.static["video"], self.static["labels"], cache_enabled=False)
        except RuntimeError as exc:  # an op that syncs with the host, or allocates outside the graph
            raise RuntimeError(
                f"TRAIN.CUDA_GRAPHS: the train step could not be captured in a CUDA graph ({exc}); "
                "set TRAIN.CUDA_GRAPHS false"
            ) from exc
        self.static["logits"], self.static["loss"] = logits, loss
        missing = [n for n, p in self.model.named_parameters() if p.requires_grad and p.grad is None]
        if missing:
            raise RuntimeError(f"CUDA graph capture left parameters without gradients: {missing[:5]}")
        with torch.no_grad():  # undo the warm-up's BN statistics updates (in place: the graph uses them)
            for name, b in self.model.named_buffers():
                b.copy_(buffers[name])
        self.graph = graph

    def __call__(self, video: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        if self.graph is None:
            self._capture(video, labels)
        elif video.shape != self.static["video"].shape or labels.shape != self.static["labels"].shape:
            raise RuntimeError(
                f"TRAIN.CUDA_GRAPHS: batch shape {tuple(video.shape)} differs from the captured "
                f"{tuple(self.static['video'].shape)}; every train iteration must have the same shape"
            )
        self.static["video"].copy_(video, non_blocking=True)
        self.static["labels"].copy_(labels, non_blocking=True)
        self.graph.replay()
        return self.static["logits"], self.static["loss"]

