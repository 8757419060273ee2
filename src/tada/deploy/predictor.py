"""A model loaded once and run on many videos: ``tada.Predictor``.

::

    from tada import Predictor
    predictor = Predictor.from_run("output/synthetic_tada2d")      # config, best checkpoint, names
    predictor = Predictor(cfg, "checkpoint.pyth", device="cpu", precision="bf16")
    predictor = Predictor.from_onnx("tada2d.onnx")                  # an export and its sidecar
    predictor.predict("video.mp4")            # [{"label": ..., "id": ..., "score": ...}, ...]
    predictor.predict(frames, fps=25)         # a uint8 array (T, H, W, 3)
    predictor.predict_many(["a.mp4", "rtsp://host/stream", "pipe:0"])

A whole video is scored with the test protocol of `tada test`: the config's temporal views
(DATA.SAMPLING_MODE) times spatial crops, each normalised as in training, their softmax (or
scores, DATA.ENSEMBLE_METHOD) averaged. Views go through the model ``batch_size`` at a time
(TEST.BATCH_SIZE by default), so memory does not grow with the number of views; several videos
share batches. A video that cannot be decoded, or whose scores are not finite, is a result with
an ``error`` instead of ``top``; it never stops the others.

Inputs: a file path; a URL FFmpeg opens (``http://``, ``rtsp://``, ``pipe:0``) or a binary file
object, whose video stream is first copied (remuxed, not re-encoded) into a temporary file,
because the views of the test protocol need random access; or a uint8 array (T, H, W, 3) in RGB
with its ``fps``. Timelines and features over sliding windows read the video as a stream instead
(:meth:`Predictor.windows`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tada.config import Config, default_config, load_config
from tada.data.decode import DecodeError, VideoReader, first_video_stream, open_video
from tada.data.frame_indices import sample_indices
from tada.data.transforms import apply_plan, normalize_, plan_test_crop
from tada.data.windows import FrameStream, WindowClip, WindowSpec, prefetched, stream_windows
from tada.errors import TadaError

__all__ = ["POOLS", "PRECISIONS", "ArrayReader", "PredictionError", "Predictor", "is_url", "open_source",
           "smooth_scores"]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
POOLS = ("avg", "max", "none")  # features of several crops: averaged, max-pooled, or concatenated
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # scheme: as FFmpeg's protocols (pipe:, http://, ...)


class PredictionError(TadaError, ValueError):
    """The predictor cannot be built or was given something it cannot score; the message says why."""


# ------------------------------------------------------------------------------------------------
# Video sources
# ------------------------------------------------------------------------------------------------
class ArrayReader:
    """A uint8 (T, H, W, 3) RGB array behind the decoder interface (``num_frames``, ``fps``, ``get_frames``)."""

    def __init__(self, frames: np.ndarray, *, fps: float, name: str = "<array>") -> None:
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
            raise PredictionError(f"{name}: frames must be a uint8 numpy array, got "
                                  f"{getattr(frames, 'dtype', type(frames).__name__)}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or min(frames.shape[1:3]) < 1:
            raise PredictionError(f"{name}: frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}")
        if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
            raise PredictionError(f"{name}: fps must be a positive number, got {fps!r}")
        self.path = name
        self.frames = frames
        self.num_frames = int(frames.shape[0])
        self.height, self.width = int(frames.shape[1]), int(frames.shape[2])
        self.fps = float(fps)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < 0 or idx.max() >= self.num_frames:
            raise ValueError(f"{self.path}: frame indices {idx.tolist()} outside [0, {self.num_frames})")
        return self.frames[idx]

    def close(self) -> None:
        pass


def is_url(text: str) -> bool:
    """Whether ``text`` names an FFmpeg protocol (``pipe:0``, ``http://...``) rather than a local file."""
    return bool(_URL.match(text)) and not os.path.exists(text)


def _describe(video: Any, position: int) -> str:
    if isinstance(video, np.ndarray):
        return f"<array {position}>"
    if isinstance(video, (str, os.PathLike)):
        return os.fspath(video)
    return getattr(video, "name", None) or f"<stream {position}>"


def spool_stream(source: Any, dest: Path, *, name: str) -> Path:
    """Copy the first video stream of a URL or file object into ``dest`` (Matroska), packet by packet."""
    import av

    try:
        with av.open(source, metadata_errors="ignore") as src, av.open(str(dest), "w", format="matroska") as dst:
            stream = first_video_stream(src)
            if stream is None:
                raise DecodeError(name, "no video stream")
            out = dst.add_stream_from_template(stream)
            for packet in src.demux(stream):
                if packet.dts is None and packet.pts is None:
                    continue  # the demuxer's final flush packet
                packet.stream = out
                dst.mux(packet)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(name, f"cannot read the stream: {exc}") from exc
    return dest


@contextlib.contextmanager
def open_source(video: Any, *, name: str, fps: float | None, decoder: str = "pyav",
                threads: int = 1) -> Iterator[VideoReader]:
    """A reader for a path, a URL or file object (spooled to a temporary file) or a uint8 array."""
    if isinstance(video, np.ndarray):
        if fps is None:
            raise PredictionError(f"{name}: an array of frames needs its fps (predict(frames, fps=...))")
        yield ArrayReader(video, fps=fps, name=name)
        return
    if isinstance(video, (str, os.PathLike)) and not is_url(os.fspath(video)):
        reader = open_video(os.fspath(video), backend=decoder, threads=threads)
        try:
            yield reader
        finally:
            reader.close()
        return
    if not isinstance(video, (str, os.PathLike)) and not hasattr(video, "read"):
        raise PredictionError(f"{name}: expected a path, a URL, a binary file object or a uint8 array, "
                              f"got {type(video).__name__}")
    with tempfile.TemporaryDirectory(prefix="tada_stream_") as tmp:
        spooled = spool_stream(os.fspath(video) if isinstance(video, os.PathLike) else video,
                               Path(tmp) / "video.mkv", name=name)
        reader = open_video(spooled, backend="pyav", threads=threads)
        try:
            yield reader
        finally:
            reader.close()


# ------------------------------------------------------------------------------------------------
# Score accumulation
# ------------------------------------------------------------------------------------------------
class _VideoScores:
    """The running aggregate of one video's view scores (DATA.ENSEMBLE_METHOD), in float64."""

    def __init__(self, method: str) -> None:
        from tada.engine.metrics import AGGREGATIONS

        self.method = method
        self.use_max = AGGREGATIONS[method] == "max"
        self.total: Tensor | None = None
        self.count = 0
        self.finite = True

    def add(self, logits: Tensor) -> None:
        from tada.engine.metrics import aggregate_views

        self.finite = self.finite and bool(torch.isfinite(logits).all())
        scores = aggregate_views(logits, self.method)
        part = scores.max(0).values if self.use_max else scores.sum(0)
        if self.total is None:
            self.total = part
        else:
            self.total = torch.maximum(self.total, part) if self.use_max else self.total + part
        self.count += logits.shape[0]

    def result(self) -> Tensor:
        return self.total if self.use_max else self.total / self.count


NON_FINITE = "the model's scores are not finite (NaN or Inf): the checkpoint or the input is broken"


def top_classes(scores: Tensor, *, k: int, class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """The ``k`` best classes of a score vector as ``{label, id, score}``, best first."""
    values, ids = scores.topk(min(k, scores.numel()))
    return [{"label": class_names[int(i)] if class_names else str(int(i)), "id": int(i), "score": float(s)}
            for s, i in zip(values.tolist(), ids.tolist())]


# ------------------------------------------------------------------------------------------------
# The predictor
# ------------------------------------------------------------------------------------------------
class Predictor:
    """A video model (a checkpoint on torch, or an ONNX export) loaded once, with its input pipeline.

    ``cfg`` says how to feed the model (frames, sampling, test scale and crop, mean/std, views);
    ``views`` is (temporal clips, spatial crops), by default the config's multi-view protocol when
    it runs one after training (TEST.AUTOMATIC_MULTI_SCALE_TEST), else TEST.NUM_ENSEMBLE_VIEWS x
    TEST.NUM_SPATIAL_CROPS. ``precision`` is fp32, bf16 or fp16 (autocast on ``device``).
    """

    def __init__(
        self,
        cfg: Config,
        checkpoint: str | os.PathLike | None = None,
        *,
        model: Any = None,
        class_names: Sequence[str] | None = None,
        device: str | None = None,
        precision: str = "fp32",
        views: tuple[int, int] | None = None,
        batch_size: int | None = None,
    ) -> None:
        from tada.config.schema import TEST_KEY_PREFIXES, require_implemented

        require_implemented(cfg, TEST_KEY_PREFIXES, PredictionError)
        if (checkpoint is None) == (model is None):
            raise PredictionError("give a checkpoint (or a model already loaded), not both and not neither")
        if precision not in PRECISIONS:
            raise PredictionError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.cfg = cfg
        self.precision = precision
        self.is_onnx = model is not None and not isinstance(model, torch.nn.Module)
        self.device = self._device(device)
        if self.is_onnx and precision != "fp32":
            raise PredictionError(f"an ONNX model runs in the precision it was exported in; got precision {precision}")
        self.model = model if model is not None else self._load(cfg, checkpoint)
        if isinstance(self.model, torch.nn.Module):
            self.model.to(self.device).eval()
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        num_classes = int(cfg.VIDEO.HEAD.NUM_CLASSES)
        if class_names is not None and len(class_names) != num_classes:
            raise PredictionError(f"{len(class_names)} class names for a model with {num_classes} classes")
        self.class_names = list(class_names) if class_names is not None else None
        self.views = self._views(views)
        self.batch_size = int(batch_size if batch_size is not None else cfg.TEST.BATCH_SIZE)
        if self.batch_size < 1:
            raise PredictionError(f"batch size must be >= 1, got {self.batch_size}")
        self._static_batch = getattr(self.model, "input_shape", (None,))[0] if self.is_onnx else None

    # --- construction --------------------------------------------------------------------------
    def _device(self, device: str | None) -> torch.device:
        if self.is_onnx:
            if device not in (None, "cpu"):
                raise PredictionError(f"the ONNX backend runs on the CPU; got device {device!r}")
            return torch.device("cpu")
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            raise PredictionError(f"device {device}: CUDA is not available here (use cpu)")
        return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @staticmethod
    def _load(cfg: Config, checkpoint: str | os.PathLike) -> torch.nn.Module:
        from tada.checkpoint import load_checkpoint
        from tada.models import build_model

        path = Path(checkpoint)
        if not path.is_file():
            raise PredictionError(f"checkpoint not found: {path}" + (" (a folder)" if path.is_dir() else ""))
        if path.suffix == ".onnx":
            raise PredictionError(f"{path} is an ONNX model: use Predictor.from_onnx (--backend onnxruntime)")
        model = build_model(cfg)
        load_checkpoint(model, path, strict=True)
        return model

    def _views(self, views: tuple[int, int] | None) -> tuple[int, int]:
        from tada.config.schema import multi_view_protocol

        cfg = self.cfg
        if views is None:
            multi = cfg.TEST.AUTOMATIC_MULTI_SCALE_TEST or self.is_onnx
            views = multi_view_protocol(cfg) if multi else (cfg.TEST.NUM_ENSEMBLE_VIEWS, cfg.TEST.NUM_SPATIAL_CROPS)
        clips, crops = int(views[0]), int(views[1])
        if clips < 1 or crops not in (1, 3):
            raise PredictionError(f"views must be >= 1 clips x 1 or 3 crops, got {clips}x{crops}")
        return clips, crops

    @classmethod
    def from_run(cls, output_dir: str | os.PathLike, **kwargs: Any) -> Predictor:
        """The model a training run produced: OUTPUT_DIR/config.yaml, its best checkpoint (the newest
        one when no validation ran), and the class names its test recorded (else the config's)."""
        from tada.deploy.export import resolve_class_names
        from tada.engine.checkpointing import best_path, latest_checkpoint

        out = Path(output_dir)
        cfg_path = out / "config.yaml"
        if not cfg_path.is_file():
            raise PredictionError(f"{out}: no config.yaml (not the OUTPUT_DIR of a `tada train` run)")
        cfg = load_config(cfg_path)
        checkpoint = best_path(out)
        if not checkpoint.is_file():
            latest = latest_checkpoint(out)
            if latest is None:
                raise PredictionError(f"{out}: no checkpoint in {out / 'checkpoints'}")
            checkpoint = latest.path
        if "class_names" not in kwargs:
            results = out / "results.json"
            names = json.loads(results.read_text()).get("class_names") if results.is_file() else None
            kwargs["class_names"] = names if names else resolve_class_names(cfg)
        return cls(cfg, checkpoint, **kwargs)

    @classmethod
    def from_onnx(cls, model_path: str | os.PathLike, *, cfg: Config | None = None, threads: int = 0,
                  **kwargs: Any) -> Predictor:
        """An exported ONNX model on onnxruntime; its sidecar sets the input pipeline and class names
        (``cfg`` only adds what a sidecar does not carry: TEST.BATCH_SIZE, DATA.DECODER, ...)."""
        from tada.deploy.serving import load_predictor

        onnx_model = load_predictor(model_path, threads=threads)
        base = cfg if cfg is not None else default_config()
        served = base.with_overrides(onnx_model.config_overrides())
        kwargs.setdefault("class_names", onnx_model.class_names)
        return cls(served, model=onnx_model, **kwargs)

    # --- running the model ---------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None or self.is_onnx:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    @torch.no_grad()
    def logits(self, clips: Tensor) -> Tensor:
        """Float32 CPU logits (B, num_classes) of normalised clips (B, 3, T, H, W)."""
        if self.is_onnx:
            pad = (-clips.shape[0]) % self._static_batch if self._static_batch else 0
            if pad:  # a static-batch export takes multiples of its batch: repeat the last clip, drop it after
                clips = torch.cat([clips, clips[-1:].expand(pad, *clips.shape[1:])])
            return self.model(clips)[: clips.shape[0] - pad].float()
        with self._autocast():
            return self.model(clips.to(self.device)).float().cpu()

    @torch.no_grad()
    def features(self, clips: Tensor) -> Tensor:
        """Float32 CPU backbone features (B, dim): the model's pooled ``forward_features`` output, the
        head's input (``forward_head(..., pre_logits=True)``)."""
        if self.is_onnx:
            raise PredictionError("an ONNX export returns logits only; features need the checkpoint (torch)")
        with self._autocast():
            feats = self.model.forward_head(self.model.forward_features(clips.to(self.device)), pre_logits=True)
        return feats.float().cpu()

    # --- whole videos --------------------------------------------------------------------------
    def view_clips(self, reader: VideoReader) -> Iterator[Tensor]:
        """The test views of one video, normalised (3, T, crop, crop), temporal view by temporal view."""
        d = self.cfg.DATA
        clips, crops = self.views
        for t in range(clips):
            idx = sample_indices(d.SAMPLING_MODE, reader.num_frames, reader.fps, num_input_frames=d.NUM_INPUT_FRAMES,
                                 sampling_rate=d.SAMPLING_RATE, target_fps=d.TARGET_FPS, view=t, num_views=clips,
                                 minus_interval=d.MINUS_INTERVAL)
            clip = torch.from_numpy(reader.get_frames(idx))
            height, width = clip.shape[1], clip.shape[2]
            for s in range(crops):
                plan = plan_test_crop(height, width, scale=d.TEST_SCALE, crop=d.TEST_CROP_SIZE, spatial_index=s,
                                      num_crops=crops)
                yield normalize_(apply_plan(clip, plan), d.MEAN, d.STD)

    def predict(self, video: Any, *, topk: int = 5, fps: float | None = None) -> list[dict[str, Any]]:
        """The ``topk`` classes of one video, best first; a video that cannot be scored raises."""
        result = self.predict_many([video], topk=topk, fps=fps)[0]
        if "error" in result:
            raise PredictionError(f"{result['path']}: {result['error']}")
        return result["top"]

    def predict_many(self, videos: Sequence[Any], *, topk: int = 5, fps: float | None = None
                     ) -> list[dict[str, Any]]:
        """One dict per video, in order: ``path``, ``views`` and ``top``, or ``path`` and ``error``."""
        if topk < 1:
            raise PredictionError(f"topk must be >= 1, got {topk}")
        d = self.cfg.DATA
        names = [_describe(v, i) for i, v in enumerate(videos)]
        scores: dict[int, _VideoScores] = {}
        errors: dict[int, str] = {}
        pending: list[tuple[int, Tensor]] = []

        def flush() -> None:
            if pending:
                logits = self.logits(torch.stack([clip for _, clip in pending]))
                for position, (vi, _) in enumerate(pending):
                    scores[vi].add(logits[position : position + 1])
                pending.clear()

        for vi, video in enumerate(videos):
            scores[vi] = _VideoScores(d.ENSEMBLE_METHOD)
            try:
                with open_source(video, name=names[vi], fps=fps, decoder=d.DECODER, threads=d.DECODER_THREADS) as r:
                    for clip in self.view_clips(r):
                        pending.append((vi, clip))
                        if len(pending) >= self.batch_size:
                            flush()
            except DecodeError as exc:
                errors[vi] = exc.reason
                pending[:] = [(i, c) for i, c in pending if i != vi]
        flush()
        out = []
        for vi, name in enumerate(names):
            if vi not in errors and not scores[vi].finite:
                errors[vi] = NON_FINITE
            if vi in errors:
                out.append({"path": name, "error": errors[vi]})
                continue
            top = top_classes(scores[vi].result(), k=topk, class_names=self.class_names)
            out.append({"path": name, "views": f"{self.views[0]}x{self.views[1]}", "top": top})
        return out


    # --- sliding windows -----------------------------------------------------------------------
    def window_spec(self, *, stride: float | None = None, seconds: float | None = None) -> WindowSpec:
        """The config's clip as a sliding window (see :mod:`tada.data.windows`)."""
        try:
            return WindowSpec.from_config(self.cfg, stride=stride, seconds=seconds)
        except ValueError as err:
            raise PredictionError(str(err)) from None

    def _frame_transform(self, crops: int) -> Callable[[np.ndarray], Tensor]:
        """RGB frame (H, W, 3) -> its ``crops`` test crops (crops, 3, crop, crop), 0..255 float."""
        d = self.cfg.DATA
        if crops not in (1, 3):
            raise PredictionError(f"crops must be 1 or 3, got {crops}")
        plans: dict[tuple[int, int], list] = {}

        def transform(rgb: np.ndarray) -> Tensor:
            size = rgb.shape[:2]
            if size not in plans:
                plans[size] = [plan_test_crop(size[0], size[1], scale=d.TEST_SCALE, crop=d.TEST_CROP_SIZE,
                                              spatial_index=s, num_crops=crops) for s in range(crops)]
            frame = torch.from_numpy(np.ascontiguousarray(rgb))[None]
            return torch.stack([apply_plan(frame, plan)[:, 0] for plan in plans[size]])

        return transform

    def windows(self, video: Any, *, outputs: str = "logits", stride: float | None = None,
                seconds: float | None = None, crops: int = 1, fps: float | None = None,
                threads: int | None = None, prefetch: bool = True) -> Iterator[tuple[WindowClip, Tensor | None]]:
        """Each window of a video read as a stream, with the model's ``outputs`` for it: ``logits``
        (crops, num_classes) or ``features`` (crops, dim); a window that does not decode comes with
        None and its ``error``. Windows go through the model ``batch_size // crops`` at a time;
        with ``prefetch`` the next ones are decoded meanwhile, in a thread."""
        if outputs not in ("logits", "features"):
            raise PredictionError(f"outputs must be 'logits' or 'features', got {outputs!r}")
        spec = self.window_spec(stride=stride, seconds=seconds)
        run = self.logits if outputs == "logits" else self.features
        d = self.cfg.DATA
        name = _describe(video, 0)
        if isinstance(video, np.ndarray) and fps is None:
            raise PredictionError(f"{name}: an array of frames needs its fps")
        stream = FrameStream(video, name=name, fps=fps, threads=d.DECODER_THREADS if threads is None else threads)
        per_batch = max(1, self.batch_size // crops)
        batch: list[WindowClip] = []

        def flush() -> Iterator[tuple[WindowClip, Tensor]]:
            if not batch:
                return
            clips = normalize_(torch.cat([w.clip for w in batch]), d.MEAN, d.STD)
            out = run(clips).view(len(batch), crops, -1)
            for w, row in zip(batch, out):
                w.clip = None
                yield w, row
            batch.clear()

        # decoding runs up to two batches ahead of the model, in a thread
        source = prefetched(stream_windows(stream, spec, transform=self._frame_transform(crops)),
                            depth=2 * per_batch if prefetch else 0)
        for window in source:
            if window.error is not None:
                yield from flush()
                yield window, None
                continue
            batch.append(window)
            if len(batch) >= per_batch:
                yield from flush()
        yield from flush()

    def timeline(self, video: Any, *, stride: float | None = None, seconds: float | None = None, topk: int = 5,
                 smooth: int = 0, crops: int = 1, fps: float | None = None) -> dict[str, Any]:
        """What happens when: each window's ``start``/``end`` seconds and ``top`` classes (or ``error``).

        ``smooth`` averages each window's scores with its ``smooth`` neighbours on each side (those
        that decoded). Crops are aggregated as the views of a test (DATA.ENSEMBLE_METHOD).
        """
        if topk < 1 or smooth < 0:
            raise PredictionError(f"topk must be >= 1 and smooth >= 0, got {topk} and {smooth}")
        rows: list[dict[str, Any]] = []
        scores: list[Tensor | None] = []
        for window, logits in self.windows(video, stride=stride, seconds=seconds, crops=crops, fps=fps):
            row = {"start": round(window.start, 4), "end": round(window.end, 4)}
            if logits is None or not bool(torch.isfinite(logits).all()):
                row["error"] = window.error or NON_FINITE
                scores.append(None)
            else:
                acc = _VideoScores(self.cfg.DATA.ENSEMBLE_METHOD)
                acc.add(logits)
                scores.append(acc.result())
            rows.append(row)
        for row, score in zip(rows, smooth_scores(scores, smooth)):
            if score is not None:
                row["top"] = top_classes(score, k=topk, class_names=self.class_names)
        spec = self.window_spec(stride=stride, seconds=seconds)
        return {"path": _describe(video, 0), "window_seconds": spec.seconds, "stride": spec.stride,
                "crops": crops, "smooth": smooth, "windows": rows}

    def window_features(self, video: Any, *, stride: float | None = None, seconds: float | None = None,
                        crops: int = 1, pool: str = "avg", fps: float | None = None) -> dict[str, Any]:
        """Backbone features of each window: ``features`` (num_windows, dim) float32 (dim x crops with
        pool ``none``: the crops concatenated), the windows' ``start``/``end`` seconds, the windows that
        failed with their ``error`` (``failed``), and the video's ``fps``."""
        if pool not in POOLS:
            raise PredictionError(f"pool must be one of {POOLS}, got {pool!r}")
        feats: list[np.ndarray] = []
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        video_fps = float(fps) if fps else 0.0
        for window, out in self.windows(video, outputs="features", stride=stride, seconds=seconds, crops=crops,
                                        fps=fps):
            video_fps = window.fps
            span = {"start": round(window.start, 4), "end": round(window.end, 4)}
            if out is None or not bool(torch.isfinite(out).all()):
                failed.append({**span, "error": window.error or "the model's features are not finite (NaN or Inf)"})
                continue
            pooled = out.mean(0) if pool == "avg" else out.max(0).values if pool == "max" else out.reshape(-1)
            feats.append(pooled.numpy())
            done.append(span)
        array = np.stack(feats) if feats else np.zeros((0, self.feature_dim * (crops if pool == "none" else 1)),
                                                       np.float32)
        return {"features": array, "windows": done, "failed": failed, "fps": video_fps}

    @property
    def feature_dim(self) -> int:
        """The width of the backbone's pooled features (the head's input)."""
        if self.is_onnx:
            raise PredictionError("an ONNX export returns logits only; features need the checkpoint (torch)")
        dim = getattr(self.model, "num_features", None)
        if dim is None:
            raise PredictionError(f"{type(self.model).__name__} does not say its feature width (num_features)")
        return int(dim)


def smooth_scores(scores: Sequence[Tensor | None], radius: int) -> list[Tensor | None]:
    """Each score vector averaged with up to ``radius`` neighbours on each side; None entries (windows
    that failed) stay None and are left out of their neighbours' averages."""
    if radius == 0:
        return list(scores)
    out: list[Tensor | None] = []
    for i, score in enumerate(scores):
        if score is None:
            out.append(None)
            continue
        near = [s for s in scores[max(0, i - radius): i + radius + 1] if s is not None]
        out.append(torch.stack(near).mean(0))
    return out
