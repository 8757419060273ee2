"""Frame folders vs video files on a GPU machine: can the data loader feed TAda2D-R50?

    python -m tada.bench.gpu_frames [--videos 12] [--workers 14] [--batch 16] [--seconds 6]

What it does (about 2 minutes on a 16-core H100 host; the GPU rows are skipped without CUDA):

1. makes ``--videos`` synthetic 10 s 340x256 H.264 clips (libx264 defaults, 30 fps), extracts
   them with ``tada extract-frames`` code (JPEG q90, 4:2:0) and reports the disk cost;
2. one process: ms per K400 train item (8 frames x rate 8, short side U[224,340), 224 crop) from
   the video, from the frame folder (CPU JPEG decoding), and the worker's share of the GPU route
   (JPEG bytes only); JPEG decoding per frame with simplejpeg and Pillow;
3. clips/s fed by ``--workers`` DataLoader workers for each route, the batch finished on the
   device (moved, or decoded by nvjpeg + cropped + resized + normalised);
4. the training rate of TAda2D-R50 at ``--batch`` (bf16 autocast, channels-last), and a short
   training run fed by each route: the fraction of the step time spent waiting for data.

The list repeats the few videos so that an epoch is long; they sit in the page cache, as a
dataset on a local SSD mostly does.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from tada.config import load_config
from tada.data.datasets import build_dataset
from tada.data.extract import ExtractSettings, extract_videos
from tada.data.loader import build_loader, gpu_transform


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def make_clip(path: str, seed: int, seconds: int = 10, fps: int = 30, width: int = 340, height: int = 256) -> int:
    """A textured, moving H.264 clip (about 0.25 MB; JPEG frames about 30 KB at q90, like K400's)."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (height // 6, width // 6, 3)).astype(np.uint8)
    background = np.asarray(Image.fromarray(small).resize((width + 16, height + 16), Image.BILINEAR)).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(seconds * fps):
            dx, dy = int(6 * np.sin(t / 20 + seed)), int(6 * np.cos(t / 25))
            img = background[8 + dy:8 + dy + height, 8 + dx:8 + dx + width].copy()
            cx, cy = (t * 3 + 40 * seed) % width, height / 2 + 40 * np.sin(t / 15)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (255, 40, 40)
            img += rng.normal(0, 2, img.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return os.path.getsize(path)


def _make_clip_job(args: tuple[str, int, int]) -> int:
    return make_clip(args[0], args[1], seconds=args[2])


def make_dataset(root: Path, *, videos: int, repeats: int, workers: int, seconds: int = 10) -> dict:
    """Videos + K400-style lists + a config; frames extracted to root/frames. Returns sizes/times."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    jobs = [(str(root / "videos" / f"clip{i:03d}.mp4"), i, seconds) for i in range(videos)]
    start = time.perf_counter()
    if workers > 1 and videos > 1:
        with mp.get_context("spawn").Pool(min(workers, videos)) as pool:
            sizes = pool.map(_make_clip_job, jobs)
    else:
        sizes = [_make_clip_job(job) for job in jobs]
    made = time.perf_counter() - start
    rels = [f"clip{i:03d}.mp4" for i in range(videos)]
    lines = "".join(f"{rel} {i % 10}\n" for _ in range(repeats) for i, rel in enumerate(rels))
    for split in ("train", "val", "test"):
        (root / f"kinetics400_{split}_list.txt").write_text(lines)
    report = extract_videos([(r, i % 10) for i, r in enumerate(rels)], root=root / "videos", out=root / "frames",
                            name="train", settings=ExtractSettings(quality=90), workers=min(workers, videos),
                            progress=False)
    if any(r.status == "failed" for r in report.results):
        raise RuntimeError(report.summary())
    (root / "bench.yaml").write_text(
        "TRAIN: {DATASET: kinetics400}\nTEST: {DATASET: kinetics400}\nVIDEO: {HEAD: {NUM_CLASSES: 10}}\n"
    )
    return {"source_mb": sum(sizes) / 1e6 / videos, "frames_mb": sum(r.bytes for r in report.results) / 1e6 / videos,
            "kb_per_frame": sum(r.bytes for r in report.results) / 1e3 / sum(r.num_frames for r in report.results),
            "make_s": made, "extract_s_per_video": sum(r.seconds for r in report.results) / videos,
            "extract_wall_s": report.seconds}


def config(root: Path, *, fmt: str, gpu: bool, workers: int, batch: int):
    return load_config(root / "bench.yaml", overrides=[
        "DATA.DATA_ROOT_DIR", str(root / "videos"), "DATA.ANNO_DIR", str(root), "DATA.FRAMES_DIR", str(root / "frames"),
        "DATA.FORMAT", fmt, "AUGMENTATION.USE_GPU", gpu, "DATA_LOADER.NUM_WORKERS", workers,
        "TRAIN.BATCH_SIZE", batch, "DATA_LOADER.PERSISTENT_WORKERS", False, "DATA_LOADER.PIN_MEMORY", True,
    ])


ROUTES = [  # name, DATA.FORMAT, AUGMENTATION.USE_GPU, needs CUDA
    ("video, CPU decode+transform", "video", False, False),
    ("frames, CPU JPEG decode+transform", "frames", False, False),
    ("frames, GPU JPEG decode+transform", "frames", True, True),
]


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------
def per_item_ms(root: Path, *, items: int) -> dict[str, tuple[float, float]]:
    """Train items in this process with one torch thread, as in a DataLoader worker.

    Returns (CPU ms, wall ms) per item for each route; CPU time is the figure that survives a
    busy machine, wall time the one a worker delivers when it has its core to itself.
    """
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, fmt, gpu, _ in ROUTES:
            ds = build_dataset(config(root, fmt=fmt, gpu=gpu, workers=0, batch=16), "train")
            torch.manual_seed(0)
            ds[0]
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(items):
                ds[i % len(ds)]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            key = name.replace("GPU JPEG decode+transform", "JPEG bytes only (GPU route's worker)")
            out[key] = (1e3 * cpu / items, 1e3 * wall / items)
    finally:
        torch.set_num_threads(threads)
    return out


def jpeg_decoders_ms(root: Path) -> dict[str, float]:
    import simplejpeg
    from PIL import Image

    folder = root / "frames" / "clip000"
    data = [p.read_bytes() for p in sorted(folder.glob("img_*.jpg"))[:100]]
    result = {}
    for name, fn in [("simplejpeg (libjpeg-turbo)", lambda d: simplejpeg.decode_jpeg(d, colorspace="RGB")),
                     ("Pillow", lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")))]:
        fn(data[0])
        best = float("inf")
        for _ in range(3):  # CPU time, best of three: robust to a busy machine
            t = time.process_time()
            for d in data:
                fn(d)
            best = min(best, time.process_time() - t)
        result[name] = 1e3 * best / len(data)
    return result


def loader_rate(root: Path, *, fmt: str, gpu: bool, workers: int, batch: int, seconds: float,
                device: torch.device) -> float:
    """Clips/s delivered to ``device`` by the loader (steady state, after every worker's first batches)."""
    cfg = config(root, fmt=fmt, gpu=gpu, workers=workers, batch=batch)
    it = _forever(build_loader(cfg, "train"))
    for _ in range(max(2 * workers, 4)):  # the start-up burst: each worker's prefetched batches
        gpu_transform(next(it), cfg, device)
    _sync(device)
    clips, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        b = gpu_transform(next(it), cfg, device)
        clips += b["video"].shape[0]
    _sync(device)
    rate = clips / (time.perf_counter() - start)
    del it
    return rate


def _forever(loader):
    """Batches without end: a new epoch starts when one ends (the lists are short)."""
    while True:
        yield from loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(device: torch.device):
    from tada.models import create_model

    model = create_model("tada2d_r50", num_classes=10, channels_last=True).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step(video: torch.Tensor, label: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(video), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def model_rate(step, *, batch: int, device: torch.device, steps: int = 30) -> float:
    torch.backends.cudnn.benchmark = True
    x = torch.randn(batch, 3, 8, 224, 224, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    for _ in range(10):
        step(x, y)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    _sync(device)
    return batch * steps / (time.perf_counter() - t)


def training_run(root: Path, step, *, fmt: str, gpu: bool, workers: int, batch: int, steps: int,
                 device: torch.device) -> tuple[float, float, float]:
    """A short training run: (data-wait fraction, of which GPU decode/transform, clips/s)."""
    cfg = config(root, fmt=fmt, gpu=gpu, workers=workers, batch=batch)
    it = _forever(build_loader(cfg, "train"))
    for _ in range(max(2 * workers, 4)):  # start-up: not part of the steady state
        b = gpu_transform(next(it), cfg, device)
        step(b["video"], b["label"].to(device))
    _sync(device)
    wait = transform = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        raw = next(it)
        t1 = time.perf_counter()
        b = gpu_transform(raw, cfg, device)
        _sync(device)  # attribute the GPU decode/resize to data, not to the step
        t2 = time.perf_counter()
        wait += t1 - t0
        transform += t2 - t1
        step(b["video"], b["label"].to(device))
        _sync(device)  # the step's GPU time is the step's: the next wait starts after it
    _sync(device)
    total = time.perf_counter() - start
    return (wait + transform) / total, transform / total, batch * steps / total


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--clip-seconds", type=int, default=10, help="length of each synthetic clip")
    parser.add_argument("--repeats", type=int, default=100, help="list entries per video")
    parser.add_argument("--workers", type=int, default=14, help="DataLoader workers")
    parser.add_argument("--prep-workers", type=int, default=os.cpu_count() or 1,
                        help="processes that make the clips and extract the frames")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=6.0, help="measurement time per loader row")
    parser.add_argument("--items", type=int, default=40, help="items per route in the one-process timing")
    parser.add_argument("--steps", type=int, default=60, help="training steps per route")
    parser.add_argument("--no-model", action="store_true", help="skip the TAda2D-R50 rows")
    parser.add_argument("--root", help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    try:
        import torchvision  # noqa: F401
        has_tv = True
    except ImportError:
        has_tv = False
    print(f"device: {torch.cuda.get_device_name() if cuda else 'CPU only'}; torch {torch.__version__}; "
          f"{os.cpu_count()} CPU cores; torchvision {'yes' if has_tv else 'no'}", flush=True)

    failures: list[str] = []

    def section(title: str, fn) -> None:
        """Run one part; a failure is printed and counted, and the other parts still run."""
        try:
            fn()
        except Exception as exc:  # a benchmark reports every part it can; the exit status tells
            failures.append(title)
            print(f"\n{title}: FAILED: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()

    with tempfile.TemporaryDirectory(prefix="tada_gpu_frames_") as tmp:
        root = Path(args.root or tmp)
        t0 = time.perf_counter()
        info = make_dataset(root, videos=args.videos, repeats=args.repeats, workers=args.prep_workers,
                            seconds=args.clip_seconds)
        print(f"\n{args.videos} clips of {args.clip_seconds} s 340x256 made in {info['make_s']:.1f} s; extracted in "
              f"{info['extract_wall_s']:.1f} s ({info['extract_s_per_video']:.2f} s per video per worker)")
        print(f"disk per video: H.264 {info['source_mb']:.2f} MB, JPEG frames {info['frames_mb']:.2f} MB "
              f"({info['kb_per_frame']:.1f} KB per frame, {info['frames_mb'] / info['source_mb']:.0f}x)")

        def items_table() -> None:
            print("\n| one worker (1 thread), K400 train item | CPU ms per item | wall ms per item |\n|---|---|---|")
            items = per_item_ms(root, items=args.items)
            for name, (cpu_ms, wall_ms) in items.items():
                print(f"| {name} | {cpu_ms:.1f} | {wall_ms:.1f} |")
            ratio = items[ROUTES[1][0]][0] / items[ROUTES[0][0]][0]
            print(f"frames / video (CPU time): {ratio:.2f}")
            print("\n| JPEG decoder, 340x256 q90 4:2:0 | CPU ms per frame |\n|---|---|")
            for name, ms in jpeg_decoders_ms(root).items():
                print(f"| {name} | {ms:.2f} |")

        section("per-item timing", items_table)
        print(f"\n| {args.workers} workers, batch {args.batch} | clips/s fed to {device.type} |\n|---|---|", flush=True)
        for name, fmt, gpu, needs_cuda in ROUTES:
            if needs_cuda and not (cuda and has_tv):
                print(f"| {name} | skipped: needs CUDA and torchvision |")
                continue

            def row(name=name, fmt=fmt, gpu=gpu) -> None:
                rate = loader_rate(root, fmt=fmt, gpu=gpu, workers=args.workers, batch=args.batch,
                                   seconds=args.seconds, device=device)
                print(f"| {name} | {rate:.0f} |", flush=True)

            section(f"loader: {name}", row)

        if args.no_model or not cuda:
            print("\nTAda2D-R50 rows skipped" + ("" if args.no_model else ": no CUDA device"))
        else:
            def model_rows() -> None:
                step = make_model(device)
                rate = model_rate(step, batch=args.batch, device=device)
                print(f"\nTAda2D-R50 training, batch {args.batch} x 8 x 224^2, bf16: {rate:.0f} clips/s "
                      "(synthetic input on the GPU)")
                print("\n| training run fed by | data wait | of which GPU decode+resize | clips/s |"
                      "\n|---|---|---|---|", flush=True)
                for name, fmt, gpu, needs_cuda in ROUTES:
                    if needs_cuda and not has_tv:
                        continue

                    def run(name=name, fmt=fmt, gpu=gpu) -> None:
                        frac, dec, clips = training_run(root, step, fmt=fmt, gpu=gpu, workers=args.workers,
                                                        batch=args.batch, steps=args.steps, device=device)
                        print(f"| {name} | {100 * frac:.1f}% | {100 * dec:.1f}% | {clips:.0f} |", flush=True)

                    section(f"training run: {name}", run)

            section("TAda2D-R50", model_rows)
        print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if failures:
        print(f"FAILED parts: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
