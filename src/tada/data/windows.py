"""Sliding windows over a video read as a stream: bounded memory, one decode, partial failures.

A window is the clip a model was trained on, cut at a regular time step. With
``interval_based`` sampling it spans ``NUM_INPUT_FRAMES x SAMPLING_RATE`` frames at
``TARGET_FPS`` (8 x 8 at 30 fps: 2.13 s) and its frames are picked exactly as a test clip of that
length is; with ``segment_based`` sampling (SSv2: frames spread over a whole, short video) a
window has a length in seconds (:data:`SEGMENT_WINDOW_SECONDS` unless given) and its frames are the
midpoints of ``NUM_INPUT_FRAMES`` equal segments of it. Windows start every ``stride`` seconds
from the first frame (default: the window length, so they tile the video) until the video ends;
a window running past the end repeats the last frame, as a test clip of a short video does, and
its end is the video's end.

The video is decoded once, front to back (:class:`FrameStream`). Only frames some window still
needs are converted and kept, each once, already resized and cropped, so memory is bounded by the
windows in flight (window length / stride of them), not by the video's length; time grows
linearly with its length. Frame positions come from the frames' timestamps at the stream's
average rate, so a variable-rate video is sampled by time, a frame that is not there is the frame
on screen at that time, and a pipe or a live URL needs no index.

Broken videos: a packet that fails to decode marks the frames up to the next good one as
missing, and the windows that need them fail with the reason and their time range; a file that
ends before the duration its header declares (truncated) fails the windows past its last frame.
Windows that decode are produced as usual. Nothing raises unless not a single frame decodes.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tada.data.decode import DecodeError, first_video_stream
from tada.data.frame_indices import sample_indices

__all__ = [
    "SEGMENT_WINDOW_SECONDS",
    "FrameStream",
    "WindowClip",
    "WindowSpec",
    "prefetched",
    "stream_windows",
]

# The window of a segment-sampled model: about the mean length of a Something-Something-V2 video,
# the clips such models are trained on (their frames are spread over the whole clip).
SEGMENT_WINDOW_SECONDS = 4.0
# A file whose last frame ends this long (plus one frame) before the declared duration is truncated.
_TRUNCATION_SLACK_SECONDS = 0.5


@dataclass(frozen=True)
class WindowSpec:
    """How windows are cut: the config's sampling, a length and a stride in seconds."""

    sampling_mode: str
    num_input_frames: int
    sampling_rate: int
    target_fps: float
    seconds: float
    stride: float
    minus_interval: bool = False

    def __post_init__(self) -> None:
        for name in ("seconds", "stride"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"window {name} must be a positive number of seconds, got {value!r}")

    @classmethod
    def from_config(cls, cfg: Any, *, stride: float | None = None, seconds: float | None = None) -> WindowSpec:
        """The config's clip as a window. ``seconds`` sets the length of a segment-sampled window only:
        an interval-sampled model sees its trained time span (``frames x rate / target fps``)."""
        d = cfg.DATA
        if d.SAMPLING_MODE == "interval_based":
            if seconds is not None:
                raise ValueError("a window length applies to segment_based sampling; an interval_based "
                                 "window spans DATA.NUM_INPUT_FRAMES x DATA.SAMPLING_RATE frames at DATA.TARGET_FPS")
            length = d.NUM_INPUT_FRAMES * d.SAMPLING_RATE / d.TARGET_FPS
        elif d.SAMPLING_MODE == "segment_based":
            length = SEGMENT_WINDOW_SECONDS if seconds is None else float(seconds)
        else:
            raise ValueError(f"unknown DATA.SAMPLING_MODE {d.SAMPLING_MODE!r}")
        return cls(d.SAMPLING_MODE, int(d.NUM_INPUT_FRAMES), int(d.SAMPLING_RATE), float(d.TARGET_FPS),
                   seconds=float(length), stride=float(length if stride is None else stride),
                   minus_interval=bool(d.MINUS_INTERVAL))

    def start_frame(self, k: int, fps: float) -> int:
        return int(round(k * self.stride * fps))

    def indices(self, k: int, fps: float) -> np.ndarray:
        """Frame positions of window ``k`` in a video at ``fps``: a single test view of a clip that long."""
        length = max(1, int(round(self.seconds * fps)))
        local = sample_indices(self.sampling_mode, length, fps, num_input_frames=self.num_input_frames,
                               sampling_rate=self.sampling_rate, target_fps=self.target_fps, view=0, num_views=1,
                               minus_interval=self.minus_interval)
        return self.start_frame(k, fps) + local


@dataclass
class WindowClip:
    """One window: ``clip`` (crops, 3, T, h, w) on the 0..255 scale, or ``error`` and no clip."""

    index: int
    start: float
    end: float
    clip: Tensor | None = None
    error: str | None = None
    fps: float = 0.0  # the video's frame rate (the stream's average rate)


# ------------------------------------------------------------------------------------------------
# Frames as a stream
# ------------------------------------------------------------------------------------------------
class FrameStream:
    """The frames of a video front to back: ``("frame", position, frame)``, ``("error", reason)`` for a
    packet that does not decode (decoding goes on), ``("stop", reason)`` when the file cannot be read on.

    ``source`` is a path, an FFmpeg URL (``pipe:0``), a binary file object, or a uint8 array
    (T, H, W, 3) with its ``fps``. ``rgb(frame)`` converts a yielded frame to uint8 (H, W, 3);
    conversion is left to the caller so frames no window needs are never converted.
    ``declared_seconds`` is the duration the container announces (None if it does not), set once
    the stream is open.
    """

    def __init__(self, source: Any, *, name: str, fps: float | None = None, threads: int = 1) -> None:
        self.source, self.name, self.threads = source, name, threads
        self.fps: float | None = None
        self.declared_seconds: float | None = None
        if isinstance(source, np.ndarray):
            if fps is None or not fps > 0:
                raise ValueError(f"{name}: an array of frames needs a positive fps, got {fps!r}")
            self.fps = float(fps)
            self.declared_seconds = source.shape[0] / self.fps

    @staticmethod
    def rgb(frame: Any) -> np.ndarray:
        return frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")

    @staticmethod
    def size(frame: Any) -> tuple[int, int]:
        """(height, width) of a yielded frame, without converting it."""
        return (frame.shape[0], frame.shape[1]) if isinstance(frame, np.ndarray) else (frame.height, frame.width)

    def __iter__(self) -> Iterator[tuple]:
        if isinstance(self.source, np.ndarray):
            for i, frame in enumerate(self.source):
                yield ("frame", i, frame)
            return
        yield from self._decode()

    def _open(self):
        import av

        source = os.fspath(self.source) if isinstance(self.source, os.PathLike) else self.source
        if isinstance(source, str) and os.path.exists(source) and os.path.getsize(source) == 0:
            raise DecodeError(self.name, "empty file (0 bytes)")
        try:
            container = av.open(source, metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(self.name, f"cannot open: {exc}") from exc
        stream = first_video_stream(container)
        if stream is None:
            container.close()
            raise DecodeError(self.name, "no video stream")
        rate = next((r for r in (stream.average_rate, stream.guessed_rate, stream.base_rate)
                     if r is not None and float(r) > 0), None)
        if rate is None:
            container.close()
            raise DecodeError(self.name, "cannot determine the frame rate")
        self.fps = float(rate)
        if stream.duration and stream.time_base:
            self.declared_seconds = float(stream.duration * stream.time_base)
        elif container.duration:
            self.declared_seconds = container.duration / av.time_base
        if self.threads != 1:  # 0: FFmpeg picks the count
            stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        return container, stream

    def _decode(self) -> Iterator[tuple]:
        import av

        container, stream = self._open()
        try:
            t0 = None
            last = -1
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except (av.FFmpegError, OSError) as exc:  # the container itself is broken from here on
                    yield ("stop", f"cannot read past this point: {exc}")
                    break
                try:
                    frames = packet.decode()
                except (av.FFmpegError, ValueError) as exc:
                    yield ("error", f"a packet does not decode: {exc}")
                    continue
                for frame in frames:
                    if frame.pts is None or frame.time_base is None:
                        position = last + 1
                    else:
                        t = float(frame.pts * frame.time_base)
                        t0 = t if t0 is None else t0
                        position = max(int(round((t - t0) * self.fps)), last + 1)
                    last = position
                    yield ("frame", position, frame)
        finally:
            container.close()


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------
@dataclass
class _Pending:
    index: int
    indices: np.ndarray
    frames: dict[int, Tensor] = field(default_factory=dict)
    error: str | None = None

    @property
    def last(self) -> int:
        return int(self.indices[-1])

    def needs(self, position: int) -> bool:
        return position not in self.frames and bool(np.any(self.indices == position))


def stream_windows(
    stream: FrameStream,
    spec: WindowSpec,
    *,
    transform: Callable[[np.ndarray], Tensor],
) -> Iterator[WindowClip]:
    """The windows of ``stream`` in order. ``transform`` turns an RGB frame (H, W, 3) into what a
    window stacks along time, (crops, 3, h, w); it runs once per frame some window uses."""
    pending: collections.deque[_Pending] = collections.deque()
    next_k = 0
    last = -1
    last_frame: Any = None
    last_tensor: Tensor | None = None
    broken: str | None = None  # a decode error since the last good frame
    stream_error: str | None = None
    shape: tuple[int, int] | None = None
    fps = 0.0

    def span(w: _Pending, end_frame: float | None = None) -> tuple[float, float]:
        start = spec.start_frame(w.index, fps) / fps
        end = start + spec.seconds if end_frame is None else min(start + spec.seconds, end_frame / fps)
        return start, end

    def finished(w: _Pending, end_frame: float | None = None) -> WindowClip:
        start, end = span(w, end_frame)
        if w.error is not None:
            return WindowClip(w.index, start, end, error=w.error, fps=fps)
        clip = torch.stack([w.frames[int(i)] for i in w.indices], dim=2)  # (crops, 3, T, h, w)
        return WindowClip(w.index, start, end, clip=clip, fps=fps)

    for event in stream:
        if event[0] == "error":  # a packet that does not decode: the next good frame follows a gap
            broken = event[1]
            continue
        if event[0] == "stop":  # nothing more can be read
            broken = stream_error = event[1]
            continue
        _, position, frame = event
        fps = stream.fps
        size = stream.size(frame)
        if shape is None:
            shape = size
        elif size != shape:  # a frame of another size: treated as a frame that does not decode
            broken = f"the frame size changes from {shape[1]}x{shape[0]} to {size[1]}x{size[0]}"
            continue
        while spec.start_frame(next_k, fps) <= position:
            pending.append(_Pending(next_k, spec.indices(next_k, fps)))
            next_k += 1
        tensor = None
        for w in pending:
            if w.error is not None:
                continue
            gap = w.indices[(w.indices > last) & (w.indices < position)]
            if gap.size:
                if broken is not None or last_frame is None:
                    w.error = broken or "the video starts late"
                    start, end = span(w)
                    w.error = f"frames at {start:.2f}-{end:.2f} s do not decode ({w.error})"
                    continue
                if last_tensor is None:
                    last_tensor = transform(stream.rgb(last_frame))
                for i in gap:
                    w.frames[int(i)] = last_tensor  # the frame on screen at that time
            if w.needs(position):
                if tensor is None:
                    tensor = transform(stream.rgb(frame))
                w.frames[position] = tensor
        broken = None
        last, last_frame, last_tensor = position, frame, tensor
        # complete once a later frame arrived: the last frame of a truncated file is cut short
        while pending and (pending[0].error is not None or pending[0].last < last):
            yield finished(pending.popleft())
    yield from _finish(stream, spec, pending, next_k, last=last, last_frame=last_frame, last_tensor=last_tensor,
                       error=stream_error, transform=transform, finished=finished)


def _finish(stream: FrameStream, spec: WindowSpec, pending, next_k: int, *, last: int, last_frame: Any,
            last_tensor: Tensor | None, error: str | None, transform, finished) -> Iterator[WindowClip]:
    """At the end of the stream: pad the windows past the last frame, or fail them when the file
    ends before its declared duration (truncated) or could not be read to its end."""
    if last < 0:
        raise DecodeError(stream.name, f"no frame decodes{f' ({error})' if error else ''}")
    fps = stream.fps
    end_frame = last + 1
    declared = stream.declared_seconds
    cut = declared is not None and end_frame / fps + _TRUNCATION_SLACK_SECONDS + 1 / fps < declared
    if cut or error is not None:
        # the windows using the last frame read (likely cut short) and all later ones fail
        reason = (f"the file ends at {last / fps:.2f} s, before its declared {declared:.2f} s (truncated?)"
                  if cut else f"decoding stops at {last / fps:.2f} s ({error})")
        for w in pending:
            if w.error is None:
                w.error = reason
            yield finished(w)
        if cut:
            k = next_k
            while spec.start_frame(k, fps) / fps < declared:
                start = spec.start_frame(k, fps) / fps
                yield WindowClip(k, start, start + spec.seconds, error=reason, fps=fps)
                k += 1
        return
    for w in pending:
        if w.error is None:
            fill = last_tensor if last_tensor is not None else transform(stream.rgb(last_frame))
            last_tensor = fill
            for i in w.indices[w.indices > last]:
                w.frames[int(i)] = fill
        yield finished(w, end_frame)


def prefetched(items: Iterator[Any], *, depth: int) -> Iterator[Any]:
    """``items`` produced by a background thread, at most ``depth`` ahead, so that decoding the next
    windows overlaps the model's work on these (FFmpeg and torch release the GIL). The order is
    kept, an exception of the producer is raised here, and closing this generator stops the thread
    (and closes ``items``, hence the video). ``depth`` 0 iterates in the caller's thread."""
    if depth <= 0:
        yield from items
        return
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("done", None))
        except Exception as exc:  # handed over to the consumer, which raises it
            put(("raise", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="tada-window-decoder", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "raise":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        thread.join()
