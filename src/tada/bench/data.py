"""`tada benchmark data`: the cost of one training item against the bare decoding floor.

It writes its own sources into a temporary folder (or ``--cache``): Kinetics-like 10 s 340x256
H.264 clips (x264 defaults, about 0.4 MB) and SSv2-like 4 s 12 fps VP9 webm clips, then times,
item by item and interleaved so both see the same machine load:

- the dataset item (open + index + seek + decode + RGB + crop/resize/flip + normalise), for the
  K400 8x8 interval sampler and the SSv2 8-frame segment sampler (train), plus the test item
  (short side 256, 3 crops) and the USE_GPU worker item (decode + uint8 crop only);
- the floor: a bare PyAV decode of exactly the same frames (seek to the keyframe before the
  first frame, decode forward, RGB only for the kept frames).

Times are CPU seconds of this process (one decoder thread, one torch thread), which a shared
machine disturbs far less than wall time; wall medians are printed beside them. The goals these
ratios are held to are stated in docs/benchmarks.md. ``--loader-workers N`` also measures a
DataLoader with N workers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from tada.data.annotations import VideoEntry
from tada.data.augment import parse_rand_augment
from tada.data.datasets import ClipSpec, VideoDataset
from tada.data.decode import open_video

__all__ = ["write_benchmark_sources", "floor_decode", "benchmark_data", "add_arguments", "run"]


def _scene(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth panning colour fields, moving disks and a fixed texture: compresses like real footage."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.integers(0, 16, (height, width, 1)).astype(np.float32)
    phase = rng.uniform(0, 100)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        pan = 2.0 * t + phase
        img = np.empty((height, width, 3), np.float32)
        img[..., 0] = 110 + 80 * np.sin((xx + pan) / 29.0) * np.cos(yy / 41.0)
        img[..., 1] = 120 + 70 * np.cos((yy - 0.7 * pan) / 23.0)
        img[..., 2] = 100 + 60 * np.sin((xx + yy + pan) / 57.0)
        for k in range(3):
            cx = (50 + k * 90 + (3 + k) * t) % width
            cy = height / 2 + (60 - 15 * k) * np.sin(t / (15 + 5 * k) + k)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (18 + 6 * k) ** 2] = [230, 200 - 60 * k, 40 + 80 * k]
        frames[t] = np.clip(img + texture, 0, 255).astype(np.uint8)
    return frames


def _encode(path: Path, frames: np.ndarray, *, fps: int, codec: str, options: dict) -> None:
    import av

    _, h, w, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = options
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_benchmark_sources(folder: str | os.PathLike, *, count: int = 3) -> dict[str, list[Path]]:
    """``count`` K400-like mp4 and SSv2-like webm files in ``folder`` (reused when present)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {"k400": [], "ssv2": []}
    for i in range(count):
        mp4 = folder / f"k400_{i}.mp4"
        if not mp4.is_file():
            # x264 defaults (preset medium, crf 23, keyint 250, 3 B-frames), like Kinetics copies.
            _encode(mp4, _scene(300, 256, 340, seed=i), fps=30, codec="libx264", options={})
        out["k400"].append(mp4)
        webm = folder / f"ssv2_{i}.webm"
        if not webm.is_file():
            _encode(webm, _scene(48, 240, 320 + 54 * (i % 2), seed=100 + i), fps=12, codec="libvpx-vp9",
                    options={"deadline": "good", "cpu-used": "4", "crf": "32", "b": "0"})
        out["ssv2"].append(webm)
    return out


def floor_decode(path: str | os.PathLike, indices, *, threads: int = 1) -> np.ndarray:
    """The reference cost: seek to the keyframe before the first wanted frame, decode forward to
    the last, convert only the wanted frames to RGB. Assumes constant frame rate and pts from 0."""
    import av

    wanted = sorted(set(int(i) for i in indices))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = threads
        step = 1 / (float(stream.average_rate) * stream.time_base)
        pts = {int(round(i * step)): i for i in wanted}
        container.seek(min(pts), stream=stream, backward=True)
        got = {}
        last = max(pts)
        for frame in container.decode(stream):
            if frame.pts in pts:
                got[pts[frame.pts]] = frame.to_ndarray(format="rgb24")
            if frame.pts >= last:
                break
    return np.stack([got[int(i)] for i in indices])


class _Recording:
    """Wraps a reader factory and records the indices each item decoded (to time the floor on them)."""

    def __init__(self, factory: Callable) -> None:
        self.factory = factory
        self.calls: list[tuple[str, np.ndarray]] = []

    def __call__(self, path: str):
        reader = self.factory(path)
        original = reader.get_frames

        def get_frames(indices):
            self.calls.append((path, np.asarray(indices)))
            return original(indices)

        reader.get_frames = get_frames
        return reader


@dataclass
class Row:
    name: str
    item_cpu_ms: float
    floor_cpu_ms: float
    item_wall_ms: float
    floor_wall_ms: float

    @property
    def ratio(self) -> float:
        return self.item_cpu_ms / self.floor_cpu_ms

    @property
    def clips_per_s(self) -> float:
        return 1000.0 / self.item_cpu_ms


def _spec(kind: str, *, gpu: bool = False, v2: bool = False) -> ClipSpec:
    """TAda2D 8-frame items, or with ``v2`` the TAdaConvV2 recipe's (16 frames; K400 interval 5)."""
    common = dict(num_input_frames=8, train_scales=(224, 340), train_crop=224, test_scale=256, test_crop=256,
                  mean=(0.45,) * 3, std=(0.225,) * 3, num_temporal_views=10 if kind == "k400" else 2,
                  num_spatial_crops=3, gpu_resize=gpu, hflip=True)
    rate = 8
    if v2:
        common.update(num_input_frames=16, train_scales=(0.08, 1.0), crop_ratio=(0.75, 1.333), grayscale_prob=0.2,
                      rand_augment=parse_rand_augment("rand-m9-n4-mstd0.5-inc1"))
        rate = 5
    if kind == "k400":
        return ClipSpec(sampling_mode="interval_based", sampling_rate=rate, target_fps=30, **common)
    return ClipSpec(sampling_mode="segment_based", sampling_rate=4, target_fps=30, **common)


def _time_rows(name: str, dataset: VideoDataset, recorder: _Recording, iters: int) -> Row:
    item_cpu, floor_cpu, item_wall, floor_wall = [], [], [], []
    n = len(dataset)
    for k in range(iters + 2):
        torch.manual_seed(k)  # every row draws the same clips
        c0, w0 = time.thread_time(), time.perf_counter()
        dataset[k % n]
        c1, w1 = time.thread_time(), time.perf_counter()
        path, idx = recorder.calls[-1]
        floor_decode(path, idx)
        c2, w2 = time.thread_time(), time.perf_counter()
        if k >= 2:  # the first items warm caches and imports
            item_cpu.append(c1 - c0), item_wall.append(w1 - w0)
            floor_cpu.append(c2 - c1), floor_wall.append(w2 - w1)
    med = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    return Row(name, med(item_cpu), med(floor_cpu), med(item_wall), med(floor_wall))


def _loader_rate(dataset: VideoDataset, workers: int, batches: int) -> float:
    from tada.data.loader import collate

    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate,
                                         persistent_workers=False, shuffle=True)
    it = iter(loader)
    next(it)  # workers started
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        seen += len(next(it)["index"])
    return seen / (time.perf_counter() - start)


def _open_extracted(folders: dict[str, str], path: str):
    """The frame-folder reader of ``path``'s extracted frames (``folders``: video path -> its folder)."""
    from tada.data.frames import open_frames

    return open_frames(folders[path])


def _frame_rows(files: dict[str, list[Path]], folder: Path, iters: int) -> dict:
    """Frame folders: the same train items read from JPEG frame folders and from the
    videos, timed interleaved; plus the USE_GPU worker item of frame folders (JPEG bytes only)."""
    import dataclasses

    from tada.data.extract import ExtractSettings, extract_video

    rows, disk = [], {}
    for kind in ("k400", "ssv2"):
        folders = {}
        for path in files[kind]:
            out = folder / "frames" / path.stem
            status, reason, meta = extract_video(path, out, settings=ExtractSettings(quality=90))
            if status == "failed":
                raise RuntimeError(f"frame extraction of {path} failed: {reason}")
            folders[str(path)] = str(out)
            disk.setdefault(kind, []).append(meta["bytes"])
        entries = [VideoEntry(str(p), 0) for p in files[kind]]
        spec = _spec(kind)
        datasets = [VideoDataset(entries, split="train", spec=s, open_reader=r, name=kind) for s, r in (
            (spec, functools.partial(open_video, threads=1)),
            (spec, functools.partial(_open_extracted, folders)),
            (dataclasses.replace(spec, gpu_resize=True, gpu_decode=True), functools.partial(_open_extracted, folders)))]
        cpu: list[list[float]] = [[], [], []]
        wall: list[list[float]] = [[], [], []]
        for k in range(iters + 2):
            for j, ds in enumerate(datasets):
                torch.manual_seed(k)  # the same clip and crop from each source
                c0, w0 = time.thread_time(), time.perf_counter()
                ds[k % len(ds)]
                if k >= 2:
                    cpu[j].append(time.thread_time() - c0), wall[j].append(time.perf_counter() - w0)
        med = [1000 * statistics.median(x) for x in cpu]
        rows.append({"name": f"{kind} train item", "video_cpu_ms": med[0], "frames_cpu_ms": med[1],
                     "jpeg_bytes_cpu_ms": med[2], "ratio": med[1] / med[0],
                     "video_wall_ms": 1000 * statistics.median(wall[0]),
                     "frames_wall_ms": 1000 * statistics.median(wall[1])})
    return {"rows": rows, "frames_mb": {k: round(sum(v) / len(v) / 1e6, 3) for k, v in disk.items()}}


def benchmark_data(*, sources: str | os.PathLike | None = None, iters: int = 20, loader_workers: int = 0,
                   threads: int = 1, frames: bool = True) -> dict:
    """Run the benchmark; returns {"rows": [...], "loader": {...}, "sources": {...}}."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tada-bench-") as tmp:
        folder = Path(sources) if sources else Path(tmp)
        started = time.perf_counter()
        files = write_benchmark_sources(folder)
        made = time.perf_counter() - started
        rows: list[Row] = []
        loader: dict[str, float] = {}
        for kind in ("k400", "ssv2"):
            entries = [VideoEntry(str(p), 0) for p in files[kind]]
            for split, gpu, v2, label in (("train", False, False, "train item"),
                                          ("test", False, False, "test item (3 crops)"),
                                          ("train", True, False, "USE_GPU worker item"),
                                          ("train", False, True, "V2 train item (16 f, RandAugment, RRC)")):
                if kind == "ssv2" and split == "test":
                    continue
                recorder = _Recording(functools.partial(open_video, threads=threads))
                ds = VideoDataset(entries, split=split, spec=_spec(kind, gpu=gpu, v2=v2), open_reader=recorder,
                                  name=kind)
                rows.append(_time_rows(f"{kind} {label}", ds, recorder, iters))
            if loader_workers > 0:
                ds = VideoDataset(entries * 64, split="train", spec=_spec(kind),
                                  open_reader=functools.partial(open_video, threads=threads), name=kind)
                loader[kind] = _loader_rate(ds, loader_workers, batches=10)
        sizes = {k: round(sum(p.stat().st_size for p in v) / len(v) / 1e6, 3) for k, v in files.items()}
        frame_rows = _frame_rows(files, folder, iters) if frames else None
    return {"rows": [dict(vars(r), ratio=r.ratio, clips_per_s=r.clips_per_s) for r in rows], "frames": frame_rows,
            "loader_clips_per_s": loader, "loader_workers": loader_workers,
            "source_mb": sizes, "sources_seconds": round(made, 1), "iters": iters}


def format_table(result: dict) -> str:
    lines = [
        "| item | ms/item (CPU) | floor ms (CPU) | item / floor | clips/s per worker | wall ms item / floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['item_cpu_ms']:.1f} | {r['floor_cpu_ms']:.1f} | {r['ratio']:.2f} | "
                     f"{r['clips_per_s']:.1f} | {r['item_wall_ms']:.1f} / {r['floor_wall_ms']:.1f} |")
    lines.append(f"floor = bare PyAV decode of the same frames (seek to keyframe, decode forward, RGB for kept "
                 f"frames); V2 train item = the TAdaConvV2 recipe: 16 frames, random resized crop, RandAugment "
                 f"rand-m9-n4-mstd0.5-inc1, grayscale 0.2. Sources: {result['source_mb']} MB "
                 f"average; medians of {result['iters']} items.")
    for kind, rate in result["loader_clips_per_s"].items():
        lines.append(f"DataLoader, {result['loader_workers']} workers, {kind} train: {rate:.1f} clips/s")
    if result.get("frames"):
        fr = result["frames"]
        lines += ["", "| frame folders (JPEG q90) | video ms/item (CPU) | frames ms/item (CPU) | frames / video | "
                  "USE_GPU worker: JPEG bytes ms | wall ms video / frames |", "|---|---|---|---|---|---|"]
        for r in fr["rows"]:
            lines.append(f"| {r['name']} | {r['video_cpu_ms']:.1f} | {r['frames_cpu_ms']:.1f} | {r['ratio']:.2f} | "
                         f"{r['jpeg_bytes_cpu_ms']:.2f} | {r['video_wall_ms']:.1f} / {r['frames_wall_ms']:.1f} |")
        lines.append(f"Disk per video: video {result['source_mb']} MB, "
                     f"frame folder {fr['frames_mb']} MB.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iters", type=int, default=20, help="items timed per row (default 20)")
    parser.add_argument("--cache", default=None, help="folder for the generated sources (default: a temp dir)")
    parser.add_argument("--loader-workers", type=int, default=0, help="also time a DataLoader with N workers")
    parser.add_argument("--threads", type=int, default=1, help="decoder threads per reader (default 1)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--no-frames", action="store_true", help="skip the frame-folder rows (JPEG extraction)")


def run(args: argparse.Namespace) -> int:
    result = benchmark_data(sources=args.cache, iters=args.iters, loader_workers=args.loader_workers,
                            threads=args.threads, frames=not args.no_frames)
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
