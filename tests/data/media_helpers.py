"""Helpers writing tiny real media files for the data tests (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def coded_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Frames that differ from each other (index-dependent pattern), uint8 (T, H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 40, size=(height, width, 3))
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        img = base + 0
        img[..., 0] += (xx * 3 + i * 7) % 200
        img[..., 1] += (yy * 2 + i * 5) % 200
        img[..., 2] += ((i * 37) % 200)
        bar = (i * 3) % width
        img[:, bar:bar + 3] = 250
        out[i] = np.clip(img, 0, 255)
    return out


def write_video(path: Path, frames: np.ndarray, *, fps: int = 30, codec: str = "libx264",
                options: dict | None = None, pts_ms: list[int] | None = None,
                container_options: dict | None = None) -> Path:
    """Encode frames; ``pts_ms`` gives per-frame timestamps (variable frame rate)."""
    _, h, w, _ = frames.shape
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p"
        if options:
            s.options = options
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                frame.pts = pts_ms[i]
                frame.time_base = Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def sequential_decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _mux_tone(container, stream, num_samples: int) -> None:
    """A quiet sine tone, 16 kHz mono, in whole 1024-sample AAC frames."""
    samples = (np.sin(np.arange(num_samples) / 10) * 0.1).astype(np.float32)[None]
    for i in range(0, num_samples - 1023, 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 1024]), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for p in stream.encode(frame):
            container.mux(p)
    for p in stream.encode():
        container.mux(p)


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        _mux_tone(c, c.add_stream("aac", rate=16000), 16000)
    return path


# Several GOPs and B-frames, so seeking and reordering are exercised.
X264_GOPS = {"x264-params": "keyint=12:min-keyint=12:bframes=3:scenecut=0", "preset": "ultrafast",
             "tune": "zerolatency"}
X264_BFRAMES = {"x264-params": "keyint=15:min-keyint=15:bframes=3:b-pyramid=normal:scenecut=0", "preset": "veryfast"}


def write_trimmed_mp4(path: Path, frames: np.ndarray, *, trimmed: int, fps: int = 30) -> Path:
    """An mp4 whose first ``trimmed`` frames have negative timestamps: an edit list hides them
    (the packets are flagged discard), as ``ffmpeg -ss ... -c copy`` writes."""
    _, h, w, _ = frames.shape
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = X264_GOPS
        s.codec_context.time_base = Fraction(1, fps)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i - trimmed, Fraction(1, fps)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def remux_without_first_packets(src: Path, dst: Path, dropped: int) -> Path:
    """A copy whose stream starts mid-GOP: the first ``dropped`` packets (the keyframe among them) are gone."""
    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream_from_template(ist)
        for k, packet in enumerate(ic.demux(ist)):
            if packet.dts is None or k < dropped:
                continue
            packet.stream = ost
            oc.mux(packet)
    return dst


def write_audio_with_cover(path: Path) -> Path:
    """An audio file with cover art: a one-picture mjpeg stream flagged attached_pic."""
    with av.open(str(path), "w") as c:
        audio = c.add_stream("aac", rate=16000)
        cover = c.add_stream("mjpeg")
        cover.width = cover.height = 32
        cover.pix_fmt = "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 200, np.uint8), format="rgb24")
        for p in list(cover.encode(picture)) + list(cover.encode()):
            c.mux(p)
        _mux_tone(c, audio, 8192)
    return path
