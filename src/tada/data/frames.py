"""Frame folders: videos stored as one JPEG per frame, read through the video-reader interface.

Decoding H.264 costs about ten times more CPU than decoding the same frames from JPEG, so a GPU
that trains faster than the CPU decodes video is fed from frame folders (the MMAction2/TSM route).
``tada extract-frames`` (:mod:`tada.data.extract`) writes them; this module reads them.

Layout (one folder per video, the MMAction2 convention)::

    FRAMES_DIR/<video path relative to DATA_ROOT_DIR, without extension>/
        img_00001.jpg img_00002.jpg ...     frame i (0-based) is img_{i+1:05d}.jpg
        meta.json                           num_frames, fps (of the stored frames), source, ...

A folder is published by renaming it from a temporary name only when every frame and
``meta.json`` are written, so a folder that exists is complete unless something deleted its
files afterwards: the reader checks that the last frame is there (one ``stat``) and raises
:class:`~tada.data.decode.DecodeError` naming the folder for a missing, truncated or undecodable
folder, exactly as a broken video file.

:class:`FrameFolderReader` has the reader interface of :mod:`tada.data.decode` (``num_frames``,
``fps``, ``get_frames(indices)`` -> uint8 (T, H, W, 3)), so samplers, transforms, the view
protocol and the failure rules are the video ones. ``fps`` is the rate of the stored frames
(source fps / step), so interval sampling stays normalised to seconds when every k-th frame was
kept. Only the frames a sampler picks are read and decoded, by simplejpeg (libjpeg-turbo) straight
into the clip array: 0.34 ms per 340x256 frame here, Pillow 0.46 ms for the same pixels
(docs/frame_folders.md).

For GPU decoding, :meth:`FrameFolderReader.get_jpeg_bytes` returns the compressed frames and
:func:`decode_jpegs_gpu` decodes a batch of them with nvjpeg (torchvision, imported lazily).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tada.data.annotations import AnnotationError
from tada.data.decode import DecodeError, check_frame_size

__all__ = [
    "META_NAME",
    "META_FORMAT",
    "DEFAULT_TEMPLATE",
    "FrameFolderReader",
    "FrameListEntry",
    "open_frames",
    "frames_dir_from_config",
    "folder_for_video",
    "read_meta",
    "write_meta",
    "read_frame_list",
    "write_frame_list",
    "decode_jpegs_gpu",
    "decode_jpegs_cpu",
    "jpeg_clip_fields",
    "failed_jpeg_clip_fields",
    "gpu_decode_transform",
]

META_NAME = "meta.json"
META_FORMAT = "tada-frames/1"
DEFAULT_TEMPLATE = "img_{:05d}.jpg"


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
def frames_dir_from_config(cfg: Any) -> str:
    """DATA.FRAMES_DIR, or ``<DATA.DATA_ROOT_DIR>/frames`` when it is empty."""
    frames_dir = cfg.DATA.FRAMES_DIR
    if frames_dir:
        return os.fspath(frames_dir)
    if not cfg.DATA.DATA_ROOT_DIR:
        raise ValueError("DATA.FORMAT 'frames' needs DATA.FRAMES_DIR or DATA.DATA_ROOT_DIR to be set")
    return os.path.join(os.fspath(cfg.DATA.DATA_ROOT_DIR), "frames")


def folder_for_video(frames_dir: str | os.PathLike, relpath: str) -> str:
    """The frame folder of a video given by its path relative to the video root (extension dropped)."""
    rel = os.path.normpath(relpath)
    if os.path.isabs(rel) or rel == ".." or rel.startswith(".." + os.sep):
        raise AnnotationError(
            f"video path '{relpath}' must lie under the video root (DATA.DATA_ROOT_DIR) to name its frame "
            f"folder; move the video there or read it with DATA.FORMAT video"
        )
    return os.path.join(os.fspath(frames_dir), os.path.splitext(rel)[0])


# --------------------------------------------------------------------------------------------
# meta.json
# --------------------------------------------------------------------------------------------
def write_meta(folder: str | os.PathLike, meta: dict) -> None:
    """Write ``meta.json`` (the extractor calls this last, before publishing the folder)."""
    with open(os.path.join(os.fspath(folder), META_NAME), "w", encoding="utf-8") as f:
        json.dump({"format": META_FORMAT, **meta}, f, indent=1, sort_keys=True)
        f.write("\n")


def read_meta(folder: str | os.PathLike) -> dict:
    """``meta.json`` of a frame folder, checked; :class:`DecodeError` naming the folder if absent or bad."""
    folder = os.fspath(folder)
    path = os.path.join(folder, META_NAME)
    if not os.path.isdir(folder):
        raise DecodeError(folder, "frame folder not found" if not os.path.exists(folder) else "not a folder")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise DecodeError(folder, f"no {META_NAME}: not a finished frame folder "
                          "(extract it again: tada extract-frames --overwrite)") from None
    except (OSError, ValueError) as exc:
        raise DecodeError(folder, f"unreadable {META_NAME}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise DecodeError(folder, f"{META_NAME} is not a {META_FORMAT} file")
    for key, kind in (("num_frames", int), ("fps", (int, float)), ("template", str)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise DecodeError(folder, f"{META_NAME}: missing or invalid '{key}'")
    return meta


# --------------------------------------------------------------------------------------------
# the reader
# --------------------------------------------------------------------------------------------
class FrameFolderReader:
    """Reads frames ``i, j, k`` of one frame folder: uint8 (T, H, W, 3) RGB, in the order asked.

    ``num_frames`` and ``fps`` come from the arguments when given (a frame list), otherwise
    from the folder's ``meta.json``. Opening costs one small file read and one ``stat``;
    ``height``/``width`` come from ``meta.json`` or, without it, the first frame's JPEG header.
    """

    def __init__(self, folder: str | os.PathLike, *, num_frames: int | None = None,
                 fps: float | None = None, template: str | None = None) -> None:
        self.path = os.fspath(folder)
        self._size: tuple[int, int] | None = None
        if num_frames is None or fps is None or template is None:
            meta = read_meta(self.path)
            num_frames = meta["num_frames"] if num_frames is None else num_frames
            fps = meta["fps"] if fps is None else fps
            template = meta["template"] if template is None else template
            if isinstance(meta.get("height"), int) and isinstance(meta.get("width"), int):
                check_frame_size(self.path, meta["height"], meta["width"])
                self._size = (meta["height"], meta["width"])
        elif not os.path.isdir(self.path):
            raise DecodeError(self.path, "frame folder not found" if not os.path.exists(self.path) else "not a folder")
        if num_frames < 1:
            raise DecodeError(self.path, f"the frame folder holds no frames (num_frames={num_frames})")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise DecodeError(self.path, f"invalid fps {fps!r}")
        self.num_frames = int(num_frames)
        self.fps = float(fps)
        self.template = template
        last = self._frame_path(self.num_frames - 1)
        if not os.path.isfile(last):
            raise DecodeError(
                self.path, f"truncated: {os.path.basename(last)} missing (expected {self.num_frames} frames)"
            )

    def _frame_path(self, index: int) -> str:
        return os.path.join(self.path, self.template.format(index + 1))

    def _read(self, index: int) -> bytes:
        path = self._frame_path(index)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise DecodeError(
                self.path, f"frame {os.path.basename(path)} missing (folder of {self.num_frames} frames)"
            ) from None
        except OSError as exc:
            raise DecodeError(self.path, f"cannot read {os.path.basename(path)}: {exc}") from exc
        if not data:
            raise DecodeError(self.path, f"frame {os.path.basename(path)} is empty (0 bytes)")
        return data

    def _check(self, indices: Sequence[int]) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError(f"{self.path}: no frame indices requested")
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise ValueError(f"{self.path}: frame indices {idx.tolist()} outside [0, {self.num_frames})")
        return idx

    def _header(self, data: bytes, index: int) -> tuple[int, int]:
        import simplejpeg

        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise DecodeError(self.path, f"frame {index + 1}: not a JPEG ({exc})") from exc
        try:  # before anything the size of the frame is allocated
            check_frame_size(self.path, int(h), int(w))
        except DecodeError as exc:
            raise DecodeError(self.path, f"frame {index + 1}: {exc.reason}") from None
        return int(h), int(w)

    @property
    def height(self) -> int:
        return self._frame_size()[0]

    @property
    def width(self) -> int:
        return self._frame_size()[1]

    def _frame_size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = self._header(self._read(0), 0)
        return self._size

    def get_jpeg_bytes(self, indices: Sequence[int]) -> list[bytes]:
        """The compressed frames, in the order asked (repeats read once): for GPU decoding.

        Each is checked cheaply (header parses, end-of-image marker present) so that garbage and
        truncated files fail here, in the worker, as a failed item by path.
        """
        idx = self._check(indices)
        cache: dict[int, bytes] = {}
        for i in map(int, idx):
            if i not in cache:
                data = self._read(i)
                self._header(data, i)  # garbage fails here, in the worker, naming the folder
                if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
                    raise DecodeError(self.path, f"frame {i + 1}: truncated JPEG (no end-of-image marker)")
                cache[i] = data
        return [cache[i] for i in map(int, idx)]

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import simplejpeg

        idx = self._check(indices)
        unique, inverse = np.unique(idx, return_inverse=True)
        out: np.ndarray | None = None
        for k, i in enumerate(unique.tolist()):
            data = self._read(i)
            h, w = self._header(data, i)
            if out is None:
                out = np.empty((len(unique), h, w, 3), dtype=np.uint8)
            elif (h, w) != out.shape[1:3]:
                raise DecodeError(self.path, f"frame {i + 1} is {w}x{h}, frame {int(unique[0]) + 1} "
                                  f"is {out.shape[2]}x{out.shape[1]}: frames differ in size")
            try:
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out[k])
            except ValueError as exc:
                raise DecodeError(self.path, f"frame {i + 1}: JPEG decoding failed ({exc})") from exc
        assert out is not None
        if self._size is None:
            self._size = out.shape[1:3]
        return out if len(unique) == len(idx) and np.all(unique == idx) else out[inverse.reshape(-1)]

    def close(self) -> None:
        """Nothing is held open; present for the reader interface."""

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_frames(folder: str | os.PathLike, *, num_frames: int | None = None, fps: float | None = None,
                template: str | None = None) -> FrameFolderReader:
    """Open a frame folder (see :class:`FrameFolderReader`)."""
    return FrameFolderReader(folder, num_frames=num_frames, fps=fps, template=template)


# --------------------------------------------------------------------------------------------
# frame lists: what extraction produced, one line per video
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameListEntry:
    """One line of a frame list: ``relpath num_frames fps label`` (label -1 when unknown)."""

    relpath: str
    num_frames: int
    fps: float
    label: int


def write_frame_list(path: str | os.PathLike, entries: Sequence[FrameListEntry]) -> None:
    """Write a frame list atomically (temp file + rename); a path may hold spaces, not line breaks."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            if "\n" in e.relpath or "\r" in e.relpath or e.relpath != e.relpath.strip():
                raise ValueError(f"frame list {path}: path {e.relpath!r} has a line break or edge spaces")
            f.write(f"{e.relpath} {e.num_frames} {e.fps!r} {e.label}\n")
    os.replace(tmp, path)


def read_frame_list(path: str | os.PathLike) -> list[FrameListEntry]:
    """Parse a frame list (the last three fields are numbers, so paths may hold spaces); a malformed
    line raises ValueError naming the file and line."""
    path = os.fspath(path)
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().rsplit(None, 3)
            if len(fields) != 4:
                raise ValueError(f"{path}:{n}: expected 'relpath num_frames fps label', got {line.strip()!r}")
            try:
                entry = FrameListEntry(fields[0], int(fields[1]), float(fields[2]), int(fields[3]))
            except ValueError:
                raise ValueError(f"{path}:{n}: num_frames, fps and label must be numbers: {line.strip()!r}") from None
            if entry.num_frames < 1 or not entry.fps > 0:
                raise ValueError(f"{path}:{n}: num_frames must be >= 1 and fps > 0: {line.strip()!r}")
            entries.append(entry)
    return entries


# --------------------------------------------------------------------------------------------
# GPU decoding: workers ship JPEG bytes and crop taps, the training step decodes and resizes
# --------------------------------------------------------------------------------------------
_TAPS = ("rows0", "rows1", "row_w", "cols0", "cols1", "col_w")


def decode_jpegs_gpu(jpegs: Sequence[Any], *, device: Any = "cuda") -> list:
    """Decode JPEG byte strings (bytes or uint8 tensors) on the GPU in one nvjpeg batch.

    Returns a list of uint8 (3, H, W) tensors on ``device``. Needs torchvision with CUDA; the
    import is lazy so CPU installs never need torchvision.
    """
    import torch

    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError as exc:
        raise ImportError(
            "GPU JPEG decoding (AUGMENTATION.USE_GPU with DATA.FORMAT frames) needs torchvision with "
            "CUDA support: `pip install torchvision` matching your torch, or set AUGMENTATION.USE_GPU false"
        ) from exc
    tensors = [j if isinstance(j, torch.Tensor) else torch.frombuffer(bytearray(j), dtype=torch.uint8)
               for j in jpegs]
    return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)


def decode_jpegs_cpu(jpegs: Sequence[bytes], *, device: Any = "cpu") -> list:
    """The CPU twin of :func:`decode_jpegs_gpu` (simplejpeg): same output layout, for tests and fallbacks."""
    import simplejpeg
    import torch

    return [torch.from_numpy(simplejpeg.decode_jpeg(bytes(j), colorspace="RGB")).permute(2, 0, 1).to(device)
            for j in jpegs]


def jpeg_clip_fields(jpegs: Sequence[bytes], plan: Any) -> dict:
    """An item's video fields for GPU decoding: the T JPEGs, the crop's source box and bilinear taps.

    ``video`` is a uint8 (3, T, 1, 1) placeholder so that items and failed items batch alike.
    """
    import torch

    return {"video": torch.zeros(3, len(jpegs), 1, 1, dtype=torch.uint8), "jpegs": list(jpegs),
            "box": torch.tensor(plan.box, dtype=torch.long), **{k: getattr(plan, k) for k in _TAPS}}


def failed_jpeg_clip_fields(num_frames: int, size: int) -> dict:
    """The fields of a failed item (no JPEGs): it decodes to a zero video of the crop size."""
    import torch

    zeros = torch.zeros(size, dtype=torch.long)
    return {"video": torch.zeros(3, num_frames, 1, 1, dtype=torch.uint8), "jpegs": [],
            "box": torch.zeros(4, dtype=torch.long), "rows0": zeros, "rows1": zeros,
            "row_w": torch.zeros(size), "cols0": zeros, "cols1": zeros, "col_w": torch.zeros(size)}


def gpu_decode_transform(batch: dict, *, mean: Sequence[float], std: Sequence[float], device: Any,
                         decode: Any = decode_jpegs_gpu) -> dict:
    """Finish a batch of :func:`jpeg_clip_fields` items on ``device``: one batched JPEG decode, then
    the crop's bilinear resize and the normalisation of the CPU route (same taps, same arithmetic).

    Returns the batch with ``video`` float (B, 3, T, h, w) on ``device``; the JPEGs, box and taps
    are dropped. A frame that fails to decode or does not fit its box raises
    :class:`~tada.data.decode.DecodeError` naming the item's path.
    """
    import torch

    from tada.data.transforms import normalize_, resize_boxes

    jpegs: list[list[bytes]] = batch["jpegs"]
    if len(jpegs) != batch["box"].shape[0]:
        raise ValueError(f"batch has {len(jpegs)} JPEG clips but {batch['box'].shape[0]} crop boxes: "
                         "select items from every field of the batch, lists included")
    flat = [j for clip in jpegs for j in clip]
    try:
        images = decode(flat, device=device) if flat else []
    except RuntimeError:
        images = None
    if images is None:  # find the culprit, so the error names a file
        for b, clip in enumerate(jpegs):
            for t, j in enumerate(clip):
                try:
                    decode([j], device=device)
                except RuntimeError as exc:
                    reason = f"frame {t} of the clip: GPU JPEG decoding failed ({exc})"
                    raise DecodeError(batch["path"][b], reason) from exc
        raise RuntimeError("GPU JPEG decoding of the batch failed, but every frame decodes alone")
    boxes, k = [], 0
    num_frames = batch["video"].shape[2]
    for b, clip in enumerate(jpegs):
        if not clip:
            boxes.append(torch.zeros(3, num_frames, 1, 1, dtype=torch.uint8, device=device))
            continue
        frames = images[k:k + len(clip)]
        k += len(clip)
        y0, y1, x0, x1 = (int(v) for v in batch["box"][b])
        if any(f.shape[1] < y1 or f.shape[2] < x1 or f.shape[1:] != frames[0].shape[1:] for f in frames):
            sizes = sorted({tuple(f.shape[1:]) for f in frames})
            raise DecodeError(batch["path"][b], f"frames of sizes {sizes} do not fit the crop box "
                              f"rows {y0}:{y1}, columns {x0}:{x1} (frames differ from meta.json?)")
        boxes.append(torch.stack([f[:, y0:y1, x0:x1] for f in frames], dim=1))
    h = max(x.shape[-2] for x in boxes)
    w = max(x.shape[-1] for x in boxes)
    padded = torch.zeros(len(boxes), 3, num_frames, h, w, dtype=torch.uint8, device=device)
    for b, x in enumerate(boxes):
        padded[b, :, :, : x.shape[-2], : x.shape[-1]] = x
    taps = [batch[key].to(device, non_blocking=True) for key in _TAPS]
    out = {key: v for key, v in batch.items() if key not in (*_TAPS, "jpegs", "box")}
    out["video"] = normalize_(resize_boxes(padded, *taps), mean, std)
    return out
