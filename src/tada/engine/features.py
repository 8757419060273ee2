"""`tada extract-features`: backbone features of sliding windows, one ``.npy`` per video.

::

    tada extract-features --cfg CFG [KEY VALUE ...] --checkpoint CKPT --videos LIST|VIDEO... --out DIR
                          [--window-stride SECONDS] [--pool avg|max|none] [--crops N] [--workers N]

Each video is read as a stream and cut into the config's clip every ``--window-stride`` seconds
(:mod:`tada.data.windows`); each window's feature is the model's pooled ``forward_features``
output, the head's input (``forward_head(..., pre_logits=True)``), so every model family with
that contract works. With 3 crops the crops' features are averaged (``avg``), max-pooled
(``max``) or concatenated (``none``: dim x 3).

``DIR/<video stem>.npy`` is (num_windows, dim) float32, one row per window that decoded;
``DIR/<video stem>.json`` says which window each row is (start/end seconds), the windows that
failed and why, the video's fps, and what produced it (checkpoint SHA-256, config, settings,
the source file's size and mtime). ``DIR/index.json`` gathers them, with the videos that failed as
a whole. Every file is written atomically and the per-video JSON last, so a killed run leaves
finished videos complete; run the same command again and it skips them (a changed checkpoint,
config, setting or source file is extracted again).

A list file (``--videos videos.txt``, suffix .txt or .list) holds one video per line, the whole
line being the path (relative paths are read from the list's folder); nothing in a line is a
comment, so any file name works.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tada.config import Config, load_config
from tada.engine.distributed import EngineError

__all__ = ["add_arguments", "extract_features", "read_video_args", "run"]

_LIST_SUFFIXES = (".txt", ".list")
INDEX_VERSION = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.pyth of ours or the official zoo)")
    parser.add_argument("--videos", nargs="+", required=True, metavar="LIST|VIDEO",
                        help="video files, or a list file (.txt/.list, one path per line)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (.npy and .json per video)")
    parser.add_argument("--window-stride", type=float, default=None, metavar="SECONDS",
                        help="seconds between window starts (default: the window length)")
    parser.add_argument("--window-seconds", type=float, default=None, metavar="SECONDS",
                        help="window length of a segment_based config (default 4)")
    parser.add_argument("--pool", choices=("avg", "max", "none"), default="avg",
                        help="how the crops' features combine: avg, max, or none (concatenated; default avg)")
    parser.add_argument("--crops", type=int, choices=(1, 3), default=1, help="spatial crops per window (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="videos extracted in parallel (processes; default 1)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast precision (default fp32)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per model call (default TEST.BATCH_SIZE)")
    parser.add_argument("--cfg", nargs="+", required=True, metavar="FILE",
                        help="YAML config, then optional config overrides (KEY VALUE pairs or KEY=VALUE)")


# ------------------------------------------------------------------------------------------------
# Inputs and outputs
# ------------------------------------------------------------------------------------------------
def read_video_args(items: list[str]) -> list[Path]:
    """Video paths from the command line: files, and list files expanded line by line."""
    videos: list[Path] = []
    for item in items:
        path = Path(item)
        if not path.is_file():
            raise EngineError(f"--videos: not found: {item}" + (" (a folder)" if path.is_dir() else ""))
        if path.suffix.lower() not in _LIST_SUFFIXES:
            videos.append(path)
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise EngineError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        for line in text.splitlines():
            if line.strip():
                entry = Path(line.rstrip("\r\n"))
                videos.append(entry if entry.is_absolute() else path.parent / entry)
    if not videos:
        raise EngineError("--videos: no videos given")
    stems: dict[str, Path] = {}
    for video in videos:
        other = stems.setdefault(video.stem, video)
        if other != video:
            raise EngineError(f"--videos: {other} and {video} would both write {video.stem}.npy; "
                              f"extract them into different --out folders")
    return videos


def _source_identity(video: Path) -> dict[str, Any]:
    """What identifies a source file cheaply: its resolved path, size and modification time."""
    st = video.stat()
    return {"path": str(video.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_json(path: Path, data: Any) -> None:
    from tada.fileio import atomic_open

    with atomic_open(path) as fh:
        json.dump(data, fh, indent=1, allow_nan=False)
        fh.write("\n")


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of a killed run (``.<name>.<random>.tmp``, see tada.fileio.atomic_open)."""
    for tmp in out.glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink()


# ------------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------------
class _Job:
    """What every video of a call shares: the predictor's inputs and the settings recorded per video."""

    def __init__(self, cfg: Config, args: argparse.Namespace, *, checkpoint_sha256: str) -> None:
        self.cfg, self.args = cfg, args
        self.settings = {
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "checkpoint_sha256": checkpoint_sha256,
            "config_sha256": hashlib.sha256(cfg.dump().encode()).hexdigest(),
            "model": cfg.MODEL.NAME,
            "window_stride": args.window_stride,
            "window_seconds": args.window_seconds,
            "pool": args.pool,
            "crops": args.crops,
            "precision": args.precision,
            "index_version": INDEX_VERSION,
        }
        self.predictor = None

    def __getstate__(self) -> dict[str, Any]:
        """Sent to worker processes without the loaded model; the config as plain data."""
        return {**self.__dict__, "cfg": self.cfg.to_dict(), "predictor": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, cfg=Config(state["cfg"]))

    def load(self):
        from tada.deploy.predictor import PredictionError, Predictor

        if self.predictor is None:
            try:
                self.predictor = Predictor(self.cfg, self.args.checkpoint, device=self.args.device,
                                           precision=self.args.precision, batch_size=self.args.batch_size)
            except PredictionError as err:
                raise EngineError(str(err)) from None
        return self.predictor

    def done(self, video: Path, out: Path) -> dict[str, Any] | None:
        """The record of a video already extracted with these settings from this very file, else None."""
        meta = out / f"{video.stem}.json"
        if not meta.is_file() or not (out / f"{video.stem}.npy").is_file():
            return None
        try:
            record = json.loads(meta.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        same = record.get("settings") == self.settings and record.get("source") == _source_identity(video)
        return record if same else None

    def extract(self, video: Path, out: Path) -> dict[str, Any]:
        """Extract one video (files written atomically, the JSON last); returns its record."""
        import numpy as np

        from tada.data.decode import DecodeError
        from tada.fileio import atomic_open

        record: dict[str, Any] = {"video": str(video), "source": _source_identity(video), "settings": self.settings}
        try:
            result = self.load().window_features(video, stride=self.args.window_stride,
                                                 seconds=self.args.window_seconds, crops=self.args.crops,
                                                 pool=self.args.pool)
        except DecodeError as exc:
            return {**record, "error": exc.reason}
        with atomic_open(out / f"{video.stem}.npy", "wb") as fh:
            np.save(fh, result["features"])
        record.update(features=f"{video.stem}.npy", shape=list(result["features"].shape), fps=result["fps"],
                      windows=[[w["start"], w["end"]] for w in result["windows"]], failed_windows=result["failed"])
        _write_json(out / f"{video.stem}.json", record)
        return record


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job, threads: int) -> None:
    import torch

    global _WORKER_JOB  # one predictor per worker process, loaded once
    torch.set_num_threads(threads)
    _WORKER_JOB = job


def _extract_in_worker(video: Path, out: Path) -> dict[str, Any]:
    return _WORKER_JOB.extract(video, out)


def _progress(total: int) -> Any:
    """tqdm when installed, else a line per video on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="video", file=sys.stderr)


def _run_all(job: _Job, todo: list[Path], *, out: Path, workers: int) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(video, record) as each video finishes; ``workers`` processes, each with its own predictor."""
    if workers <= 1 or len(todo) <= 1:
        for video in todo:
            yield video, job.extract(video, out)
        return
    import multiprocessing

    import torch

    threads = max(1, torch.get_num_threads() // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(job, threads)) as pool:
        futures = {pool.submit(_extract_in_worker, video, out): video for video in todo}
        for future in as_completed(futures):
            yield futures[future], future.result()


def extract_features(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Extract every video not extracted yet; write and return the index."""
    from tada.fileio import file_sha256

    videos = read_video_args(args.videos)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise EngineError(f"checkpoint not found: {checkpoint}")
    if args.workers < 1:
        raise EngineError(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    job = _Job(cfg, args, checkpoint_sha256=file_sha256(checkpoint))
    records: dict[Path, dict[str, Any]] = {}
    for video in videos:
        record = job.done(video, out)
        if record is not None:
            records[video] = record
    todo = [v for v in videos if v not in records]
    if not todo or args.workers <= 1:
        job.load()  # a bad checkpoint or config fails here, before any worker starts
    bar = _progress(len(videos))
    if bar is not None:
        bar.update(len(records))
    try:
        for video, record in _run_all(job, todo, out=out, workers=min(args.workers, len(todo))):
            records[video] = record
            if bar is not None:
                bar.update(1)
            else:
                state = record.get("error") or f"{record['shape'][0]} windows"
                print(f"[{len(records)}/{len(videos)}] {video}: {state}", file=sys.stderr)
    finally:
        if bar is not None:
            bar.close()
    index = _index(job, [records[v] for v in videos], skipped=len(videos) - len(todo))
    _write_json(out / "index.json", index)
    return index


def _index(job: _Job, records: list[dict[str, Any]], *, skipped: int) -> dict[str, Any]:
    ok = [r for r in records if "error" not in r]
    dims = {r["shape"][1] for r in ok}
    return {
        "index_version": INDEX_VERSION,
        "config": job.cfg.to_dict(),
        **job.settings,
        "dim": dims.pop() if len(dims) == 1 else sorted(dims),
        "videos": [{k: r[k] for k in ("video", "features", "shape", "fps", "windows", "failed_windows")} for r in ok],
        "failed": [{"video": r["video"], "error": r["error"]} for r in records if "error" in r],
        "reused": skipped,
    }


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.cfg[0], args.cfg[1:])
    index = extract_features(cfg, args)
    out = Path(args.out)
    partial = [v for v in index["videos"] if v["failed_windows"]]
    print(f"{len(index['videos'])} videos -> {out} (dim {index['dim']}; {index['reused']} already done)")
    for failure in index["failed"]:
        print(f"  failed: {failure['video']}: {failure['error']}", file=sys.stderr)
    for v in partial:
        spans = ", ".join(f"{w['start']:.2f}-{w['end']:.2f} s" for w in v["failed_windows"][:5])
        print(f"  {v['video']}: {len(v['failed_windows'])} windows not decoded ({spans}"
              f"{', ...' if len(v['failed_windows']) > 5 else ''}): {v['failed_windows'][0]['error']}", file=sys.stderr)
    return 1 if index["failed"] or partial else 0
