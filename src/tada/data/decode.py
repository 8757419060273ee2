"""Frame-exact video decoding behind one small interface.

A reader answers three questions: how many frames (``num_frames``), at what average rate
(``fps``), and what are frames ``i, j, k`` (``get_frames`` -> uint8 array (T, H, W, 3), RGB, in
the order asked, repeats allowed). Sampling and transforms only see this interface, so a
frame-folder reader or another decoder plugs in without touching them.

The PyAV reader builds a frame index by demuxing the stream once (packets only, no decoding):
the presentation timestamps give the exact frame count and each frame's position, the keyframe
flags say where decoding may start. ``get_frames`` then seeks to the keyframe before each wanted
frame and decodes forward, so 8 frames of a long video cost a few GOPs, never the whole file, and
the frames returned are exactly the frames a full sequential decode yields at those positions.
Containers without usable timestamps (no pts, duplicates, or decode-order pts of B-frames in AVI)
fall back to reading frames in output order, which is slow but exact.

Every failure (missing file, not a video, no video stream, no frames, frames that cannot be
decoded, frames larger than :data:`MAX_FRAME_PIXELS`) raises :class:`DecodeError` naming the file
and the reason; nothing returns None.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "BACKENDS",
    "DecodeError",
    "VideoReader",
    "PyAVReader",
    "DecordReader",
    "TorchCodecReader",
    "open_video",
    "MAX_FRAME_PIXELS",
    "check_frame_size",
]

BACKENDS = ("pyav", "decord", "torchcodec")
# The largest frame a reader decodes: 8192 x 8192 pixels (192 MiB as RGB), above 8K video. A header
# that claims more (a corrupt or hostile file: 65500 x 65500 is 12 GiB a frame) fails that item
# before anything is allocated.
MAX_FRAME_PIXELS = 8192 * 8192


class DecodeError(RuntimeError):
    """A video could not be opened or decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@runtime_checkable
class VideoReader(Protocol):
    """What sampling needs from a decoder. ``get_frames`` returns uint8 (T, H, W, 3) RGB."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    def get_frames(self, indices: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...


def _check_indices(path: str, indices: Sequence[int], num_frames: int) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{path}: no frame indices requested")
    if idx.min() < 0 or idx.max() >= num_frames:
        raise ValueError(f"{path}: frame indices {idx.tolist()} outside [0, {num_frames})")
    return idx


def _stack(path: str, frames: list[np.ndarray]) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DecodeError(path, f"the frame size changes inside the video: {sorted(shapes)}")
    return np.stack(frames)


def check_frame_size(path: str, height: int, width: int) -> None:
    """Raise :class:`DecodeError` for a frame size that is not positive or above :data:`MAX_FRAME_PIXELS`."""
    if height <= 0 or width <= 0:
        raise DecodeError(path, f"invalid frame size {width}x{height}")
    if height * width > MAX_FRAME_PIXELS:
        raise DecodeError(path, f"frame size {width}x{height} is above the limit of {MAX_FRAME_PIXELS} pixels; "
                          "refusing to decode it")


def _check_path(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(path, "file not found")
    if os.path.isdir(path):
        raise DecodeError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file (0 bytes)")


def _h264_disposable(codec_context):
    """A test ``packet -> bool``: is this H.264 (length-prefixed, as in mp4/mkv) picture unreferenced?

    Reads the first slice NAL header: ``nal_ref_idc == 0`` means no other picture predicts from
    it (the standard requires the same value for all slices of a picture). None for other codecs
    and for Annex-B streams, which are then decoded in full.
    """
    extradata = codec_context.extradata
    if codec_context.name != "h264" or not extradata or extradata[0] != 1 or len(extradata) < 5:
        return None
    size = (extradata[4] & 3) + 1

    def disposable(packet) -> bool:
        data = memoryview(packet)
        i, end = 0, len(data)
        while i + size < end:
            length = int.from_bytes(data[i:i + size], "big")
            header = data[i + size]
            if header & 0x1F in (1, 5):  # a coded slice (non-IDR / IDR)
                return header & 0x60 == 0
            i += size + length
        return False

    return disposable


class _Closing:
    """Readers are context managers: ``with open_video(path) as reader: ...``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def first_video_stream(container):
    """The container's first moving-picture stream; None if it has none.

    A video stream flagged ``attached_pic`` is a still image (the cover art of an audio file),
    not a video: it is skipped.
    """
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


class PyAVReader(_Closing):
    """Frame-exact reader on PyAV (FFmpeg). ``threads`` > 1 enables FFmpeg frame+slice threading.

    One decoder thread is the right choice inside DataLoader workers (the workers are the
    parallelism); more threads help a single process decoding high-resolution video.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 1) -> None:
        import av

        self.path = os.fspath(path)
        _check_path(self.path)
        if threads < 1:
            raise ValueError(f"decoder threads must be >= 1, got {threads}")
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(self.path, f"cannot open: {exc}") from exc
        try:
            stream = first_video_stream(self._container)
            if stream is None:
                kinds = sorted({s.type for s in self._container.streams}) or ["none"]
                covers = "; its picture stream is a still image (cover art)" if self._container.streams.video else ""
                raise DecodeError(self.path, f"no video stream (streams: {', '.join(kinds)}{covers})")
            self._stream = stream
            if threads > 1:
                self._stream.thread_type = "AUTO"
            self._stream.thread_count = threads
            self._build_index()
        except DecodeError:
            self.close()
            raise
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.close()
            raise DecodeError(self.path, f"cannot read the stream: {exc}") from exc

    # ------------------------------------------------------------------ index
    def _build_index(self) -> None:
        """Demux once: exact frame count, each frame's pts in display order, keyframe positions."""
        import av

        stream = self._stream
        pts: list[int] = []
        keys: list[int] = []
        durations: list[int] = []
        # Packets that are never displayed: those an edit list trims (flagged discard: decoded as
        # references, never output) and those before the first keyframe or displayed before it
        # (a stream cut without re-encoding starts mid-GOP; their references are gone).
        hidden = 0
        first_key = None
        entry_after: list[int] = []  # pts of discarded keyframes: decoding may start there
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's final flush packet
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    pts = []
                    break
                if packet.is_keyframe and first_key is None:
                    first_key = ts
                if packet.is_discard or first_key is None or ts < first_key:
                    hidden += 1
                    if packet.is_keyframe and packet.is_discard:
                        entry_after.append(ts)
                    continue
                pts.append(ts)
                durations.append(packet.duration or 0)
                if packet.is_keyframe:
                    keys.append(ts)
        except av.FFmpegError as exc:
            raise DecodeError(self.path, f"cannot demux: {exc}") from exc
        declared = stream.frames or 0
        self.truncated = 0 < len(pts) and len(pts) + hidden < declared
        if self.truncated:
            # The file ends before the frames its header announces: the last packet read is
            # likely cut short, so only the packets before it count as frames.
            del pts[-1], durations[-1]
            keys = [k for k in keys if k in set(pts)]
        self._valid_pts = set(pts) if self.truncated else None
        # A container without reordering timestamps (H.264 with B-frames in AVI) numbers packets in
        # decode order while the decoder outputs display order: a pts then names no shown frame.
        # Suspected when a reordering codec's packets arrive in pts order; confirmed by decoding.
        decode_order = (len(pts) > 1 and bool(stream.codec_context.has_b_frames)
                        and bool(np.all(np.diff(pts) > 0)) and self._output_is_reordered())
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        self._pts = np.asarray(pts, dtype=np.int64)[order]
        self._exact = len(self._pts) > 0 and bool(np.all(np.diff(self._pts) > 0)) and not decode_order
        if self._exact:
            self._pts_to_index = {int(p): i for i, p in enumerate(self._pts)}
            key_set = set(keys)
            # Entry points: keyframes, and the first shown frame after a discarded keyframe (the
            # decoder starts at that keyframe but outputs this frame first).
            self._hidden_key_entries: set[int] = set()  # never skipped as disposable: they mark the start
            for ts in entry_after:
                later = int(np.searchsorted(self._pts, ts, side="right"))
                if later < len(self._pts) and int(self._pts[later]) not in key_set:
                    self._hidden_key_entries.add(int(self._pts[later]))
            key_set |= self._hidden_key_entries
            self._keyframes = [i for i, p in enumerate(self._pts) if int(p) in key_set]
            if not self._keyframes or self._keyframes[0] != 0:
                self._keyframes.insert(0, 0)  # decoding from the first shown packet is valid
            self._entry_points = set(self._keyframes)
            self.num_frames = len(self._pts)
        else:
            # No usable timestamps: frames are read in output order; counted by decoding once
            # (exact, slow, rare) unless every packet is a shown frame of a decode-order stream.
            self._pts_to_index = {}
            self._keyframes = [0]
            self._entry_points = {0}
            self._hidden_key_entries = set()
            self.num_frames = len(self._pts) if decode_order and not hidden else self._count_by_decoding()
        if self.num_frames == 0:
            raise DecodeError(self.path, "the video stream holds no frames")
        self._precise_seek = True  # cleared when a seek lands before the target's keyframe
        self._disposable = _h264_disposable(stream.codec_context) if self._exact else None
        self.fps = self._average_fps(np.asarray(durations, dtype=np.int64)[order] if self._exact else None)
        cc = stream.codec_context
        self.height, self.width = int(cc.height), int(cc.width)
        check_frame_size(self.path, self.height, self.width)

    def _average_fps(self, durations: np.ndarray | None) -> float:
        """The stream's declared average rate, as decord (the official decoder) reports it: a variable-rate mp4
        declares frames / duration. Measured from the timestamps when no rate is declared, or when
        the declared one is more than 25% off the timestamps' mean rate (a broken header)."""
        tb = self._stream.time_base
        measured = None
        if self._exact and self.num_frames >= 2 and tb is not None:
            span = float((self._pts[-1] - self._pts[0]) * tb)
            if span > 0:
                measured = (self.num_frames - 1) / span
        declared = self._stream.average_rate
        if declared is not None and float(declared) > 0:
            if measured is None or abs(float(declared) - measured) <= 0.25 * measured:
                return float(declared)
        if measured is not None:
            return measured
        for rate in (self._stream.guessed_rate, self._stream.base_rate):
            if rate is not None and float(rate) > 0:
                return float(rate)
        if durations is not None and tb is not None and durations.size and durations[0] > 0:
            return 1.0 / float(durations[0] * tb)
        raise DecodeError(self.path, "cannot determine the frame rate")

    def _output_is_reordered(self, frames: int = 64) -> bool:
        """Whether the first ``frames`` decoded frames come out with decreasing timestamps."""
        self._seek_start()
        last = None
        for n, frame in enumerate(self._decode()):
            if frame.pts is not None:
                if last is not None and frame.pts < last:
                    return True
                last = frame.pts
            if n + 1 >= frames:
                break
        return False

    def _count_by_decoding(self) -> int:
        self._seek_start()
        count = 0
        for _ in self._decode():
            count += 1
        return count

    # ------------------------------------------------------------------ decoding
    def _seek_start(self) -> None:
        """Back to the first frame; streams that cannot seek (raw H.264, pipes) are reopened."""
        import av

        try:
            self._container.seek(0, backward=True, any_frame=False)
        except av.FFmpegError:
            self._container.close()
            self._container = av.open(self.path, metadata_errors="ignore")
            threads = self._stream.thread_count
            self._stream = first_video_stream(self._container)
            if threads > 1:
                self._stream.thread_type = "AUTO"
            self._stream.thread_count = threads

    def _decode(self, keep: set[int] | None = None):
        """Frames from the current position.

        The cut-off packet of a truncated file is never sent. With ``keep`` (the pts of the
        wanted frames), H.264 pictures that no other picture references and that are not wanted
        are not decoded at all: they cannot change any other frame (FFmpeg's skip_frame=nonref,
        per packet), and with x264's defaults they are about a third of the packets.
        """
        import av

        valid = self._valid_pts
        skippable = self._disposable if keep is not None else None
        try:
            if valid is None and skippable is None:
                yield from self._container.decode(self._stream)
                return
            for packet in self._container.demux(self._stream):
                if packet.size:
                    if valid is not None and packet.pts not in valid:
                        continue
                    if skippable is not None and packet.pts not in keep and skippable(packet):
                        continue
                yield from packet.decode()  # the final empty packet drains the decoder
        except av.FFmpegError as exc:
            raise DecodeError(self.path, f"decoding failed: {exc}") from exc

    def _to_rgb(self, frame) -> np.ndarray:
        check_frame_size(self.path, frame.height, frame.width)  # the stream may change size mid-way
        return frame.to_ndarray(format="rgb24")

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import av

        idx = _check_indices(self.path, indices, self.num_frames)
        wanted = sorted(set(int(i) for i in idx))
        try:
            got = self._collect_exact(wanted) if self._exact else self._collect_sequential(wanted)
        except (av.FFmpegError, ValueError) as exc:  # seek or colour-conversion failures
            raise DecodeError(self.path, f"decoding failed: {exc}") from exc
        missing = [i for i in wanted if i not in got]
        if missing:
            raise DecodeError(
                self.path, f"frames {missing[:8]}{'...' if len(missing) > 8 else ''} of "
                f"{self.num_frames} could not be decoded (truncated or corrupt stream?)"
            )
        return _stack(self.path, [got[int(i)] for i in idx])

    def _wanted_pts(self, indices: list[int]) -> set[int]:
        return {int(self._pts[i]) for i in indices}

    def _keyframe_before(self, i: int) -> int:
        return self._keyframes[bisect.bisect_right(self._keyframes, i) - 1]

    def _collect_exact(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Seek to the next missing frame (the demuxer lands on a keyframe at or before it),
        decode forward, keep wanted frames; repeat until all are found.

        A frame is kept only if decoding started at a keyframe at or before it, so frames a
        demuxer or an open GOP could hand over without their references are never used. A pass
        that finds nothing retries from earlier keyframes, finally from the first frame. Demuxers
        that land earlier than the target's keyframe (mp4 with B-frames and variable rate
        compares decode times) are detected; the reader then decodes forward instead of
        re-seeking, so no frame is decoded twice.
        """
        got: dict[int, np.ndarray] = {}
        wanted_set = set(wanted)
        floor = None  # after a pass without progress: seek no later than this keyframe
        while True:
            remaining = [i for i in wanted if i not in got]
            if not remaining:
                return got
            first = remaining[0]
            target = first if floor is None else min(floor, self._keyframe_before(first))
            self._container.seek(int(self._pts[target]), stream=self._stream, backward=True, any_frame=False)
            before = len(got)
            started_at = None
            for frame in self._decode(keep=self._wanted_pts(remaining) | self._hidden_key_entries):
                if frame.pts is None:  # the decoder drops timestamps: count frames instead
                    self._exact = False
                    return self._collect_sequential(wanted)
                i = self._pts_to_index.get(frame.pts)
                if i is None:
                    continue
                if started_at is None:
                    if not frame.key_frame and i not in self._entry_points:
                        continue  # decoding must begin at a keyframe to be exact
                    started_at = i
                    if started_at < self._keyframe_before(target):
                        self._precise_seek = False
                if i < started_at:
                    continue  # a leading picture of an open GOP: its references were skipped
                if i in wanted_set and i not in got:
                    got[i] = self._to_rgb(frame)
                nxt = next((j for j in remaining if j not in got and j > i), None)
                if nxt is None:
                    break
                if self._precise_seek and self._keyframe_before(nxt) > i:
                    break  # seeking to the next wanted frame is cheaper than decoding on
            if len(got) > before:
                floor = None
                continue
            key = self._keyframe_before(target)
            if key == 0:
                # Even a seek to the first keyframe did not produce them: some demuxers land past
                # it (mp4 cut without its first sync sample). Decode from the file's start once.
                got.update(self._collect_from_start([i for i in wanted if i not in got]))
                return got
            floor = self._keyframes[self._keyframes.index(key) - 1]

    def _shown_frames(self):
        """(index, frame) of every indexed frame, decoding from the first packet (exact index only):
        frames before the first entry point, and frames never shown, are skipped."""
        self._seek_start()
        started = False
        for frame in self._decode():
            i = self._pts_to_index.get(frame.pts) if frame.pts is not None else None
            if i is None:
                continue
            if not started:
                if not frame.key_frame and i not in self._entry_points:
                    continue
                started = True
            yield i, frame

    def iter_frames(self):
        """Every frame ``get_frames`` indexes, in order, as PyAV frames (one decode from the start).

        Frames that are never shown (trimmed by an edit list, before the first keyframe) and the
        cut-off packet of a truncated file are left out, as in the index.
        """
        if not self._exact:
            self._seek_start()
            yield from self._decode()
            return
        for _, frame in self._shown_frames():
            yield frame

    def _collect_from_start(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Decode from the first packet, keeping the wanted frames."""
        got: dict[int, np.ndarray] = {}
        wanted_set = set(wanted)
        for i, frame in self._shown_frames():
            if i in wanted_set and i not in got:
                got[i] = self._to_rgb(frame)
                if len(got) == len(wanted_set):
                    break
        return got

    def _collect_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        last = wanted[-1]
        self._seek_start()
        for i, frame in enumerate(self._decode()):
            if i in wanted:
                got[i] = self._to_rgb(frame)
            if i >= last:
                break
        return got

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
            self._container = None


class DecordReader(_Closing):
    """decord's reader (optional: ``pip install decord``); decord fails on some webm files."""

    def __init__(self, path: str | os.PathLike, *, threads: int = 1) -> None:
        try:
            import decord
        except ImportError as exc:
            raise ImportError(
                "DATA.DECODER 'decord' needs the decord package: `pip install decord` "
                "(or `pip install tada[decord]`), or set DATA.DECODER pyav"
            ) from exc
        self.path = os.fspath(path)
        _check_path(self.path)
        try:
            self._vr = decord.VideoReader(self.path, num_threads=threads)
        except (RuntimeError, decord.DECORDError) as exc:
            raise DecodeError(self.path, f"cannot open: {exc}") from exc
        self.num_frames = len(self._vr)
        if self.num_frames == 0:
            raise DecodeError(self.path, "the video stream holds no frames")
        self.fps = float(self._vr.get_avg_fps())
        self.height, self.width = (int(s) for s in self._vr[0].shape[:2])
        check_frame_size(self.path, self.height, self.width)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        import decord

        idx = _check_indices(self.path, indices, self.num_frames)
        try:
            return self._vr.get_batch(idx.tolist()).asnumpy()
        except (RuntimeError, decord.DECORDError) as exc:
            raise DecodeError(self.path, f"decoding failed: {exc}") from exc

    def close(self) -> None:
        self._vr = None


class TorchCodecReader(_Closing):
    """torchcodec's decoder (optional: ``pip install torchcodec``, a version matching torch)."""

    def __init__(self, path: str | os.PathLike, *, threads: int = 1) -> None:
        try:
            from torchcodec.decoders import VideoDecoder
        except (ImportError, OSError, RuntimeError) as exc:
            raise ImportError(
                "DATA.DECODER 'torchcodec' needs a torchcodec build that matches the installed "
                f"torch: `pip install torchcodec` (import failed: {exc}), or set DATA.DECODER pyav"
            ) from exc
        self.path = os.fspath(path)
        _check_path(self.path)
        try:
            self._dec = VideoDecoder(self.path, seek_mode="exact", num_ffmpeg_threads=threads,
                                     dimension_order="NHWC")
        except (RuntimeError, ValueError) as exc:
            raise DecodeError(self.path, f"cannot open: {exc}") from exc
        meta = self._dec.metadata
        self.num_frames = int(meta.num_frames or 0)
        if self.num_frames == 0:
            raise DecodeError(self.path, "the video stream holds no frames")
        self.fps = float(meta.average_fps)
        self.height, self.width = int(meta.height), int(meta.width)
        check_frame_size(self.path, self.height, self.width)

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        idx = _check_indices(self.path, indices, self.num_frames)
        try:
            return self._dec.get_frames_at(indices=idx.tolist()).data.numpy()
        except (RuntimeError, ValueError, IndexError) as exc:
            raise DecodeError(self.path, f"decoding failed: {exc}") from exc

    def close(self) -> None:
        self._dec = None


_READERS = {"pyav": PyAVReader, "decord": DecordReader, "torchcodec": TorchCodecReader}


def open_video(path: str | os.PathLike, *, backend: str = "pyav", threads: int = 1) -> VideoReader:
    """Open ``path`` with the named backend (``pyav``, ``decord``, ``torchcodec``)."""
    try:
        cls = _READERS[backend]
    except KeyError:
        raise ValueError(f"unknown video decoder '{backend}'; choose one of {', '.join(BACKENDS)}") from None
    return cls(path, threads=threads)
