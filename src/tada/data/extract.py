"""``tada extract-frames``: decode every video once into a folder of JPEG frames.

Each video is decoded sequentially with PyAV in a worker process (one decoder thread per
worker: the processes are the parallelism), optionally resized to a short side and thinned to
every k-th frame, and written as ``img_00001.jpg ...`` (frame i -> ``template.format(i + 1)``)
plus ``meta.json`` into a hidden temporary folder that is renamed into place only when complete.
Hence:

- a killed extraction leaves no half-written folder under a real name; re-running the command
  skips finished folders (their ``meta.json`` must record the same settings, else the video is
  reported, never silently mixed) and redoes the rest;
- each folder is tied to its video: ``meta.json`` records its relative path, size and
  modification time (ns). A video replaced since is extracted again; a folder written for
  another video (``a.mp4`` and ``a.mkv`` drop to one name) is an error naming both, and two
  videos of one run that would share a folder are refused before anything is extracted;
- a video that cannot be decoded is reported with its reason in ``<name>.failed.txt`` and the
  summary, and the command exits with status 1; its folder is not created, so the dataset
  treats it as a failed item by path, as it would the broken video file.

Frame indices agree with the video readers of :mod:`tada.data.decode`: the stream's frame count
and fps come from :class:`~tada.data.decode.PyAVReader` and a video whose sequential decode
yields a different number of frames fails instead of shifting indices.

Outputs, in ``--out`` (or DATA.FRAMES_DIR): the folders, ``<name>.frames.txt`` (one line per
finished video: ``relpath num_frames fps label``, relpath relative to the output root, fps the
rate of the stored frames = source fps / step, label -1 when the input has none) and
``<name>.failed.txt`` (``relpath<TAB>reason``) when something failed.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tada.data.frames import (
    DEFAULT_TEMPLATE,
    META_NAME,
    FrameListEntry,
    folder_for_video,
    open_frames,
    read_meta,
    write_frame_list,
    write_meta,
)
from tada.errors import TadaError
from tada.fileio import read_utf8_text

__all__ = [
    "VIDEO_EXTENSIONS",
    "ExtractSettings",
    "ExtractResult",
    "ExtractReport",
    "extract_video",
    "extract_videos",
    "read_video_list",
    "find_videos",
    "videos_from_config",
    "check_distinct_folders",
    "extract_jobs",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")


@dataclass(frozen=True)
class ExtractSettings:
    """What a frame folder depends on; a finished folder is reused only if these match."""

    short_side: int = 0  # 0 = keep the decoded size
    quality: int = 90
    step: int = 1  # keep every k-th frame
    template: str = DEFAULT_TEMPLATE
    subsampling: str = "420"  # JPEG chroma subsampling: 420 (as the video, smaller, faster) or 444

    def __post_init__(self) -> None:
        if self.short_side < 0:
            raise ValueError(f"short side must be >= 0 (0 = keep), got {self.short_side}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {self.quality}")
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        if self.subsampling not in ("420", "422", "444"):
            raise ValueError(f"chroma subsampling must be 420, 422 or 444, got '{self.subsampling}'")
        try:
            names = {self.template.format(1), self.template.format(2)}
        except (IndexError, KeyError, ValueError) as exc:
            raise ValueError(f"frame template '{self.template}' must format one integer: {exc}") from None
        if len(names) != 2 or any(os.sep in n or n == META_NAME for n in names):
            raise ValueError(f"frame template '{self.template}' must give distinct file names per frame")


@dataclass
class ExtractResult:
    """The outcome for one video: ``status`` is 'done', 'skipped' (already finished) or 'failed'."""

    relpath: str  # the video, relative to the video root
    folder: str  # the frame folder, relative to the output root (posix separators)
    label: int
    status: str
    reason: str = ""
    num_frames: int = 0
    fps: float = 0.0
    bytes: int = 0
    source_bytes: int = 0
    seconds: float = 0.0


@dataclass
class ExtractReport:
    """All results of one extraction, in input order, with the list files written."""

    results: list[ExtractResult]
    seconds: float
    workers: int
    list_path: str = ""
    failed_path: str = ""
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        ok = [r for r in self.results if r.status != "failed"]
        done = [r for r in self.results if r.status == "done"]
        failed = [r for r in self.results if r.status == "failed"]
        lines = [
            f"{len(self.results)} videos: {len(done)} extracted, {len(ok) - len(done)} already finished, "
            f"{len(failed)} failed ({self.seconds:.1f} s, {self.workers} worker{'s' if self.workers != 1 else ''})"
        ]
        if ok:
            disk = sum(r.bytes for r in ok)
            src = sum(r.source_bytes for r in ok)
            frames = sum(r.num_frames for r in ok)
            ratio = f", {disk / src:.1f}x the source videos ({src / 1e6:.1f} MB)" if src else ""
            lines.append(f"disk: {disk / 1e6:.1f} MB for {frames} frames, {disk / 1e6 / len(ok):.2f} MB per "
                         f"video, {disk / 1e3 / max(frames, 1):.1f} KB per frame{ratio}")
        if done:
            per = sum(r.seconds for r in done) / len(done)
            lines.append(f"time: {per:.2f} s per video per worker, {len(done) / max(self.seconds, 1e-9):.1f} "
                         "videos/s overall")
        if self.list_path:
            lines.append(f"frame list: {self.list_path}")
        if failed:
            lines.append(f"failed ({len(failed)}), listed in {self.failed_path}:")
            lines += [f"  {r.relpath}: {r.reason}" for r in failed[:10]]
            if len(failed) > 10:
                lines.append(f"  ... and {len(failed) - 10} more")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# one video
# --------------------------------------------------------------------------------------------
def _settings_of(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("short_side", "quality", "step", "template", "subsampling")}


def _source_identity(source: str) -> dict | None:
    """What ties a frame folder to its video: the file's size and modification time (ns); None when
    the video is absent (its folder, extracted earlier, is then kept as it is)."""
    try:
        st = os.stat(source)
    except OSError:
        return None
    return {"source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def _posix(relpath: str) -> str:
    return os.path.normpath(relpath).replace(os.sep, "/")


def _resized(height: int, width: int, short_side: int) -> tuple[int, int]:
    if short_side == 0:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def _write_frames(source: str, tmp: str, settings: ExtractSettings, threads: int) -> dict:
    """Decode ``source`` into ``tmp``; returns the meta to record. Raises DecodeError on any failure."""
    import av
    import simplejpeg

    from tada.data.decode import DecodeError, PyAVReader, check_frame_size

    written = total = count = 0
    # The reader's own frames: the count, order and skipped packets the video route uses.
    with PyAVReader(source, threads=threads) as reader:
        num_source, fps = reader.num_frames, reader.fps
        height, width = _resized(reader.height, reader.width, settings.short_side)
        try:
            for count, frame in enumerate(reader.iter_frames(), 1):
                if (count - 1) % settings.step:
                    continue
                check_frame_size(source, frame.height, frame.width)  # the stream may change size mid-way
                if settings.short_side:
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                data = simplejpeg.encode_jpeg(rgb, quality=settings.quality, colorspace="RGB",
                                              colorsubsampling=settings.subsampling)
                with open(os.path.join(tmp, settings.template.format(written + 1)), "wb") as f:
                    f.write(data)
                written += 1
                total += len(data)
        except (av.FFmpegError, DecodeError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else str(exc)
            raise DecodeError(source, f"decoding failed after {count} frames: {reason}") from exc
    if count != num_source:
        raise DecodeError(source, f"decoded {count} frames but the stream index lists {num_source} "
                          "(truncated or corrupt stream?)")
    return {
        "num_frames": written,
        "fps": fps / settings.step,
        "source_fps": fps,
        "source_num_frames": num_source,
        "height": height,
        "width": width,
        "bytes": total,
        **_settings_of(vars(settings)),
    }


def _check_finished(folder: str, settings: ExtractSettings, relpath: str,
                    identity: dict | None) -> tuple[str, str, dict] | None:
    """The outcome for a folder that exists (skipped or failed), or None when it must be extracted
    again because its video changed (size or modification time) or it predates that record."""
    from tada.data.decode import DecodeError

    try:
        meta = read_meta(folder)
    except DecodeError as exc:
        return "failed", f"{folder} exists but is not a finished frame folder ({exc.reason}); " \
                         "delete it or pass --overwrite", {}
    if _settings_of(meta) != _settings_of(vars(settings)):
        return "failed", f"{folder} was extracted with {_settings_of(meta)}, not " \
                         f"{_settings_of(vars(settings))}; delete it or pass --overwrite", {}
    if _posix(str(meta.get("source", ""))) != _posix(relpath):
        return "failed", f"{folder} holds the frames of '{meta.get('source')}', not of '{relpath}' (one path " \
                         "without extension names both); rename one of the videos", {}
    if identity is not None and {k: meta.get(k) for k in identity} != identity:
        return None
    try:  # the reader's own completeness check: a folder it would refuse is not finished
        open_frames(folder).close()
    except DecodeError as exc:
        return "failed", f"{folder} is damaged ({exc.reason}); pass --overwrite to extract it again", {}
    return "skipped", "", meta


def extract_video(source: str | os.PathLike, folder: str | os.PathLike, *, settings: ExtractSettings,
                  relpath: str = "", overwrite: bool = False, threads: int = 1) -> tuple[str, str, dict]:
    """Extract one video into ``folder``: returns (status, reason, meta), status done/skipped/failed.

    A finished folder is reused when its ``meta.json`` records these settings and this video
    (relative path, size, modification time); a folder of another video is a failure, one of an
    older version of this video is extracted again (and removed if that fails, so stale frames
    are never read as the new video). Failures (undecodable video, a different finished folder in
    the way, disk errors) are returned, not raised, so one bad video never stops a dataset's
    extraction.
    """
    from tada.data.decode import DecodeError

    source, folder = os.fspath(source), os.path.normpath(os.fspath(folder))
    relpath = relpath or os.path.basename(source)
    identity = _source_identity(source)
    stale = False
    if os.path.isdir(folder) and not overwrite:
        outcome = _check_finished(folder, settings, relpath, identity)
        if outcome is not None:
            return outcome
        stale = True
    parent, name = os.path.split(folder)
    tmp = os.path.join(parent, f".{name}.partial")
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.lexists(tmp):
            shutil.rmtree(tmp)  # left by a killed run
        os.mkdir(tmp)
        meta = _write_frames(source, tmp, settings, threads)
        meta.update(source=relpath, **(identity or {}))
        write_meta(tmp, meta)
        if os.path.isdir(folder):  # replace the old folder only now that the new one is complete
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except (DecodeError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = exc.reason if isinstance(exc, DecodeError) else f"{type(exc).__name__}: {exc}"
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            reason += " (the frames of its earlier version were removed)"
        return "failed", reason, {}
    return "done", "", read_meta(folder)


@dataclass(frozen=True)
class _Task:
    index: int
    source: str
    folder: str
    relpath: str
    settings: ExtractSettings
    overwrite: bool
    threads: int


def _run_task(task: _Task) -> tuple[int, str, str, dict, float, int]:
    start = time.perf_counter()
    status, reason, meta = extract_video(task.source, task.folder, settings=task.settings,
                                         relpath=task.relpath, overwrite=task.overwrite, threads=task.threads)
    size = os.path.getsize(task.source) if os.path.isfile(task.source) else 0
    return task.index, status, reason, meta, time.perf_counter() - start, size


# --------------------------------------------------------------------------------------------
# many videos
# --------------------------------------------------------------------------------------------
def extract_videos(
    videos: Sequence[tuple[str, int]],
    *,
    root: str | os.PathLike,
    out: str | os.PathLike,
    name: str,
    settings: ExtractSettings = ExtractSettings(),
    workers: int = 1,
    threads: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    pool: Any = None,
) -> ExtractReport:
    """Extract ``videos`` ((path relative to ``root``, label) pairs) into ``out``.

    Writes ``out/<name>.frames.txt`` for the finished videos (input order; a video listed twice
    is extracted once and listed twice) and ``out/<name>.failed.txt`` when some failed.
    ``workers`` > 1 runs that many processes; ``pool`` (a ``multiprocessing`` pool, left open)
    reuses the processes of an earlier call. The report has one result per distinct video.
    """
    from tqdm import tqdm

    root, out = os.fspath(root), os.fspath(out)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    os.makedirs(out, exist_ok=True)
    tasks: list[_Task] = []
    task_of: list[int] = []  # input position -> task (a video listed twice is extracted once)
    seen: dict[str, int] = {}
    for rel, _ in videos:
        folder = folder_for_video(out, rel)
        if folder not in seen:
            seen[folder] = len(tasks)
            tasks.append(_Task(len(tasks), os.path.join(root, rel), folder, rel, settings, overwrite, threads))
        elif tasks[seen[folder]].relpath != rel:
            raise TadaError(f"'{tasks[seen[folder]].relpath}' and '{rel}' would share the frame folder {folder} "
                            "(same path without extension); rename one")
        task_of.append(seen[folder])
    first_label = {t: videos[i][1] for i, t in reversed(list(enumerate(task_of)))}
    results: list[ExtractResult | None] = [None] * len(tasks)
    start = time.perf_counter()
    bar = tqdm(total=len(tasks), unit="video", desc=f"extract {name}", disable=not progress, file=sys.stderr)
    own_pool = None
    try:
        if pool is not None:
            outcomes: Iterable = pool.imap_unordered(_run_task, tasks, chunksize=1)
        elif workers == 1 or len(tasks) <= 1:
            outcomes = map(_run_task, tasks)
        else:
            own_pool = mp.get_context("spawn").Pool(min(workers, len(tasks)))
            outcomes = own_pool.imap_unordered(_run_task, tasks, chunksize=1)
        for index, status, reason, meta, seconds, size in outcomes:
            folder_rel = os.path.relpath(tasks[index].folder, out).replace(os.sep, "/")
            results[index] = ExtractResult(
                relpath=tasks[index].relpath, folder=folder_rel, label=first_label[index], status=status,
                reason=reason,
                num_frames=meta.get("num_frames", 0), fps=meta.get("fps", 0.0), bytes=meta.get("bytes", 0),
                source_bytes=size, seconds=seconds,
            )
            bar.update(1)
    finally:
        bar.close()
        if own_pool is not None:
            own_pool.terminate()  # all results are in (or we are interrupted): stop the workers
            own_pool.join()
    done = [r for r in results if r is not None]
    report = ExtractReport(results=done, seconds=time.perf_counter() - start, workers=workers)
    report.list_path = os.path.join(out, f"{name}.frames.txt")
    entries = []
    for (_, label), t in zip(videos, task_of):
        r = results[t]
        if r is not None and r.status != "failed":
            entries.append(FrameListEntry(r.folder, r.num_frames, r.fps, label))
    write_frame_list(report.list_path, entries)
    failed_path = os.path.join(out, f"{name}.failed.txt")
    failed = [r for r in done if r.status == "failed"]
    if failed:
        with open(failed_path, "w", encoding="utf-8") as f:
            f.writelines(f"{r.relpath}\t{r.reason}\n" for r in failed)
        report.failed_path = failed_path
    elif os.path.exists(failed_path):
        os.remove(failed_path)  # stale: everything succeeded this time
    for r in done:
        report.counts[r.status] = report.counts.get(r.status, 0) + 1
    return report


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def read_video_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """A list of videos: one ``relpath`` or ``relpath label`` per line (the K400 list format; a path
    with spaces needs its label)."""
    path = os.fspath(path)
    videos = []
    try:
        text = read_utf8_text(path, error=TadaError)
    except OSError as err:
        raise TadaError(f"cannot read the video list {path}: {err.strerror or err}") from None
    with io.StringIO(text, newline=None) as f:
        for n, line in enumerate(f, 1):
            fields = line.strip().rsplit(maxsplit=1)  # the path may hold spaces; a label is last
            if not fields:
                continue
            try:
                label = int(fields[1]) if len(fields) == 2 else -1
            except ValueError:
                raise TadaError(f"{path}:{n}: the label must be an integer, got {fields[1]!r}") from None
            videos.append((fields[0], label))
    if not videos:
        raise TadaError(f"{path}: the video list is empty")
    return videos


def find_videos(root: str | os.PathLike) -> list[tuple[str, int]]:
    """Every video file under ``root`` (by extension), sorted, with label -1."""
    root = os.fspath(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(dirpath, fn), root).replace(os.sep, "/"))
    return [(rel, -1) for rel in sorted(found)]


def videos_from_config(cfg: Any, split: str) -> list[tuple[str, int]]:
    """(relpath, label) of a config's split: the dataset's own list reading, same videos, same order."""
    from tada.data.annotations import AnnotationError
    from tada.data.datasets import build_dataset

    try:
        entries = build_dataset(cfg, split).entries
    except (AnnotationError, ValueError) as exc:
        raise TadaError(f"split '{split}': {exc}") from None
    root = cfg.DATA.DATA_ROOT_DIR
    return [(os.path.relpath(e.path, root), e.label) for e in entries]


def check_distinct_folders(jobs: Sequence[tuple[str, list[tuple[str, int]], str, str]]) -> None:
    """Two different videos of one run (any lists) must not map to one frame folder: the second
    would be scored with the first one's frames. Checked before anything is extracted."""
    owner: dict[str, tuple[str, str]] = {}  # folder -> (list name, video relpath)
    for name, videos, _, out in jobs:
        for rel, _ in videos:
            folder = os.path.normpath(folder_for_video(out, rel))
            first = owner.setdefault(folder, (name, rel))
            if _posix(first[1]) != _posix(rel):
                raise TadaError(f"'{first[1]}' ({first[0]} list) and '{rel}' ({name} list) would share the frame "
                                f"folder {folder} (same path without extension); rename one")


def extract_jobs(jobs: Sequence[tuple[str, list[tuple[str, int]], str, str]], *, settings: ExtractSettings,
                 workers: int, progress: bool = True,
                 on_report: Callable[[ExtractReport], None] | None = None) -> list[ExtractReport]:
    """Extract several lists of videos, each job ``(name, videos, root, out)`` as :func:`extract_videos`.

    The frame folders of all jobs are checked to be distinct before anything is extracted, and one
    pool of ``workers`` processes serves every job, so worker start-up is paid once.
    ``on_report`` sees each job's report as soon as it is done.
    """
    if workers < 1:
        raise TadaError(f"--workers must be >= 1, got {workers}")
    check_distinct_folders(jobs)
    reports = []
    most = max(len(videos) for _, videos, _, _ in jobs)
    pool = mp.get_context("spawn").Pool(min(workers, most)) if workers > 1 and most > 1 else None
    try:
        for name, videos, root, out in jobs:
            report = extract_videos(videos, root=root, out=out, name=name, settings=settings, workers=workers,
                                    progress=progress, pool=pool)
            reports.append(report)
            if on_report is not None:
                on_report(report)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return reports
