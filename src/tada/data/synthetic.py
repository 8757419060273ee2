"""A synthetic video dataset whose classes need frame order: ``tada synth`` and :func:`ensure_dataset`.

Real H.264 mp4 files (PyAV) with K400-style lists, so the demo and the tests exercise the real
decoding path. Most classes come in **time-reversal pairs**: the videos of one class are the
videos of the other played backwards, so both classes have the same distribution of frame
*sets* and only the order tells them apart. A model that averages frames independently (TSN)
is at chance inside each pair; the remaining classes differ in appearance only.

Default set (7 classes, chosen for what a small TAda2D learns from scratch on a CPU): three pairs
that change the per-frame spatial mean, which TAdaConv's routing function sees at once

- ``grows`` / ``shrinks``: a diamond whose size changes,
- ``fades in`` / ``fades out``: a square appearing / disappearing,
- ``turns red to blue`` / ``turns blue to red``: a large disk (a third of the short side in radius,
  so that the shift moves the frame's mean colour as much as the other pairs' changes do) whose
  colour shifts,

plus ``static ring`` (appearance only). ``moves left to right`` / ``moves right to left`` (a
disk translating, learned last by TAda2D) and ``static cross`` are available through
``classes=``. The ``reversal6`` preset (:data:`PRESETS`, ``tada synth --preset reversal6``) is a
harder task of three pairs only: ``slides right`` / ``slides left`` (a disk crossing the frame),
``square grows`` / ``square shrinks`` and ``bar turns clockwise`` / ``bar turns anticlockwise``,
36-90 frames, 96-160 px, 40 / 12 / 12 videos per class. Nuisances of the default classes: colours,
sizes, positions, drift, speed and timing of the change, lengths (24-64 frames), fps (24-30),
resolutions 64-112 px in landscape, portrait and square, gradient backgrounds and pixel noise.
Everything is a function of ``seed``.

Layout of the output folder::

    videos/{train,val,test}/<class-slug>_<i>.mp4
    {train,val,test}_list.txt      "<relative path> <label>" lines
    classes.txt                    one class name per line, in label order
    manifest.json                  generator name and version, parameters, classes, pairs, counts
    .tada-synthetic                owner marker

``manifest.json`` is written last: a folder with a manifest whose version and parameters match
is complete and is reused by :func:`ensure_dataset`. The generator replaces ``videos/`` and the
list files only in an empty folder or one it wrote (its marker, or a manifest naming it as
``generator``); any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tada.errors import TadaError

__all__ = [
    "GENERATOR_VERSION",
    "CLASSES",
    "DEFAULT_CLASSES",
    "PRESETS",
    "Preset",
    "SynthClass",
    "generate_dataset",
    "ensure_dataset",
    "read_manifest",
    "render_video",
    "write_video",
]

GENERATOR = "tada.data.synthetic"  # the manifest's "generator": who wrote the folder
GENERATOR_VERSION = 2
OWNER_MARKER = ".tada-synthetic"  # marks a folder this generator may rewrite (written before anything else)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SynthClass:
    """A class: what is drawn (``kind``) and whether its change plays backwards (``reverse``)."""

    name: str
    kind: str  # grow, fade, colour, move, slide, zoom, spin, ring, cross
    reverse: bool = False

    @property
    def slug(self) -> str:
        return self.name.replace(" ", "_")


CLASSES: dict[str, SynthClass] = {c.name: c for c in (
    SynthClass("grows", "grow"),
    SynthClass("shrinks", "grow", reverse=True),
    SynthClass("fades in", "fade"),
    SynthClass("fades out", "fade", reverse=True),
    SynthClass("turns red to blue", "colour"),
    SynthClass("turns blue to red", "colour", reverse=True),
    SynthClass("static ring", "ring"),
    SynthClass("moves left to right", "move"),
    SynthClass("moves right to left", "move", reverse=True),
    SynthClass("static cross", "cross"),
    SynthClass("slides right", "slide"),
    SynthClass("slides left", "slide", reverse=True),
    SynthClass("square grows", "zoom"),
    SynthClass("square shrinks", "zoom", reverse=True),
    SynthClass("bar turns clockwise", "spin"),
    SynthClass("bar turns anticlockwise", "spin", reverse=True),
)}
DEFAULT_CLASSES = ("grows", "shrinks", "fades in", "fades out", "turns red to blue", "turns blue to red",
                   "static ring")
STATIC_KINDS = ("ring", "cross")


@dataclass(frozen=True)
class Preset:
    """A named task: its classes and the nuisance ranges and split sizes of its videos."""

    classes: tuple[str, ...]
    videos_per_class: dict
    lengths: tuple[int, int]
    fps: tuple[int, int]
    sizes: tuple[int, int]

    def generator_kwargs(self) -> dict:
        """The keyword arguments of :func:`generate_dataset` / :func:`ensure_dataset` for this task."""
        return dict(classes=self.classes, videos_per_class=dict(self.videos_per_class), lengths=self.lengths,
                    fps=self.fps, sizes=self.sizes)


PRESETS: dict[str, Preset] = {
    # The demo's task: every temporal pair changes the per-frame mean (learned within a few epochs).
    "demo": Preset(DEFAULT_CLASSES, {"train": 60, "val": 20, "test": 30}, (24, 64), (24, 30), (64, 112)),
    # Three time-reversal pairs and nothing else, one of them a pure translation that the routing
    # function sees only through position-dependent features: a from-scratch model sits at "pair
    # level" (50% top-1) for many epochs before it learns direction. The training-fidelity task.
    "reversal6": Preset(("slides right", "slides left", "square grows", "square shrinks",
                         "bar turns clockwise", "bar turns anticlockwise"),
                        {"train": 40, "val": 12, "test": 12}, (36, 90), (24, 30), (96, 160)),
}


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoParams:
    """The nuisance draw of one video."""

    num_frames: int
    fps: int
    height: int
    width: int


def _draw_params(rng: np.random.Generator, *, lengths: tuple[int, int], fps: tuple[int, int],
                 sizes: tuple[int, int]) -> VideoParams:
    lo, hi = sizes
    short = 2 * int(rng.integers(lo // 2, (lo + hi) // 4 + 1))          # even, lower half of the range
    long = 2 * int(rng.integers(short // 2, hi // 2 + 1))               # even, up to the maximum
    shape = rng.choice(3, p=[0.5, 0.35, 0.15])                          # landscape, portrait, square
    height, width = [(short, long), (long, short), (short, short)][int(shape)]
    return VideoParams(int(rng.integers(lengths[0], lengths[1] + 1)), int(rng.integers(fps[0], fps[1] + 1)),
                       height, width)


def _coverage(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a shape of radius ``r`` from signed distances (pixels)."""
    if kind in ("colour", "move", "slide"):
        d = np.sqrt(dx * dx + dy * dy) - r
    elif kind in ("fade", "zoom"):
        d = np.maximum(np.abs(dx), np.abs(dy)) - r
    elif kind == "grow":
        d = (np.abs(dx) + np.abs(dy) - r) / np.sqrt(2.0)
    elif kind == "spin":  # a bar along x (dx, dy are already in the bar's frame)
        d = np.maximum(np.abs(dx) - r, np.abs(dy) - 0.2 * r)
    elif kind == "ring":
        d = np.abs(np.sqrt(dx * dx + dy * dy) - r) - 0.22 * r
    elif kind == "cross":
        arm = 0.3 * r
        d = np.minimum(np.maximum(np.abs(dx) - r, np.abs(dy) - arm), np.maximum(np.abs(dx) - arm, np.abs(dy) - r))
    else:
        raise ValueError(f"unknown shape kind '{kind}'")
    return np.clip(0.5 - d, 0.0, 1.0)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour that is neither close to pure red nor pure blue (those carry a class)."""
    hue = rng.uniform(0.1, 0.55)  # yellow .. cyan
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    rgb = 1 - np.clip(np.minimum(k, 4 - k), 0, 1)
    return 60 + 190 * rgb * rng.uniform(0.8, 1.0)


def render_video(cls: SynthClass, rng: np.random.Generator, params: VideoParams) -> np.ndarray:
    """The frames of one video of ``cls``: uint8 (T, H, W, 3). Reversed classes are played backwards."""
    t_count, h, w = params.num_frames, params.height, params.width
    short = min(h, w)
    # When the change happens: a window [a, b] of the video (speed and timing vary).
    a, b = rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)
    p = np.clip((np.linspace(0, 1, t_count) - a) / (b - a), 0, 1)[:, None, None]      # (T, 1, 1)
    # Position: near the centre (crops keep the object), with a small random drift.
    cx0 = w * rng.uniform(0.4, 0.6)
    cy0 = h * rng.uniform(0.4, 0.6)
    drift = rng.normal(0, 0.04 * short, size=2)
    tt = np.linspace(-0.5, 0.5, t_count)[:, None, None]
    cx, cy = cx0 + drift[0] * tt, cy0 + drift[1] * tt
    radius = np.full((t_count, 1, 1), short * rng.uniform(0.16, 0.24))
    alpha = np.ones((t_count, 1, 1))
    colour = np.broadcast_to(_random_colour(rng), (t_count, 1, 1, 3)).astype(np.float64)
    if cls.kind == "grow":
        r0 = short * rng.uniform(0.08, 0.12)
        radius = r0 + (short * rng.uniform(0.28, 0.34) - r0) * p
    elif cls.kind == "fade":
        alpha = p
    elif cls.kind == "colour":
        radius = np.full((t_count, 1, 1), short * rng.uniform(0.30, 0.36))
        red = np.array([rng.uniform(200, 250), rng.uniform(20, 70), rng.uniform(20, 70)])
        blue = np.array([rng.uniform(20, 70), rng.uniform(20, 70), rng.uniform(200, 250)])
        colour = red + (blue - red) * p[..., None]
    elif cls.kind == "move":
        radius = np.full((t_count, 1, 1), short * rng.uniform(0.12, 0.16))
        span = w * rng.uniform(0.4, 0.55)
        cx = w / 2 + span * (p - 0.5)
    elif cls.kind == "slide":  # a disk crossing from left to right at a random height
        radius = np.full((t_count, 1, 1), short * rng.uniform(0.10, 0.14))
        cx = w / 2 + w * rng.uniform(0.45, 0.6) * (p - 0.5)
    elif cls.kind == "zoom":  # a square whose half-side grows about threefold
        r0 = short * rng.uniform(0.07, 0.10)
        radius = r0 + (short * rng.uniform(0.26, 0.32) - r0) * p
    elif cls.kind == "spin":  # a bar turning clockwise (on screen) by 90..150 degrees
        radius = np.full((t_count, 1, 1), short * rng.uniform(0.26, 0.34))
        angle = rng.uniform(0, np.pi) + np.deg2rad(rng.uniform(90, 150)) * p
    elif cls.kind not in STATIC_KINDS:
        raise ValueError(f"unknown class kind '{cls.kind}'")
    f32 = np.float32
    yy, xx = np.mgrid[0:h, 0:w].astype(f32) + f32(0.5)
    dx, dy = xx[None] - cx.astype(f32), yy[None] - cy.astype(f32)
    if cls.kind == "spin":  # into the bar's frame: image y points down, so a growing angle turns clockwise
        cos, sin = np.cos(angle).astype(f32), np.sin(angle).astype(f32)
        dx, dy = dx * cos + dy * sin, dy * cos - dx * sin
    cov = _coverage(cls.kind, dx, dy, radius.astype(f32))
    cov = (cov * alpha.astype(f32))[..., None]                                                  # (T, H, W, 1)
    # Background: a linear gradient between two muted colours, in a random direction.
    c0, c1 = rng.uniform(10, 110, size=3).astype(f32), rng.uniform(10, 110, size=3).astype(f32)
    theta = rng.uniform(0, 2 * np.pi)
    g = ((xx - w / 2) * f32(np.cos(theta)) + (yy - h / 2) * f32(np.sin(theta))) / f32(max(h, w)) + f32(0.5)
    background = c0 + (c1 - c0) * np.clip(g, 0, 1)[..., None]                                 # (H, W, 3)
    frames = background + (colour.astype(f32) - background) * cov
    amplitude = int(rng.integers(3, 13))  # uniform pixel noise, std 1.7 .. 7
    noisy = np.rint(frames).astype(np.int16) + rng.integers(-amplitude, amplitude + 1, size=frames.shape,
                                                            dtype=np.int16)
    frames = np.clip(noisy, 0, 255).astype(np.uint8)
    return frames[::-1].copy() if cls.reverse else frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int | Fraction, *, crf: int = 18) -> None:
    """Encode uint8 (T, H, W, 3) frames as H.264 (yuv420p, even sizes) mp4, deterministically (1 thread).

    x264's ultrafast preset: 3x faster to encode and faster to decode than its defaults (no
    B-frames, CAVLC), larger files (about 80 KB for a synthetic video).
    """
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even sizes, got {w}x{h}")
    with av.open(os.fspath(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast", "threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------
def _resolve_classes(classes: Sequence[str]) -> list[SynthClass]:
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        raise ValueError(f"unknown synthetic classes {unknown}; choose from {list(CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"synthetic classes repeat: {list(classes)}")
    return [CLASSES[c] for c in classes]


def _class_groups(classes: list[SynthClass]) -> tuple[list[list[int]], list[int]]:
    """Time-reversal pairs (forward, reversed) and appearance-only classes, as label indices."""
    pairs = []
    for i, c in enumerate(classes):
        if c.reverse:
            continue
        j = next((j for j, d in enumerate(classes) if d.kind == c.kind and d.reverse), None)
        if j is not None:
            pairs.append([i, j])
    in_pair = {i for p in pairs for i in p}
    appearance = [i for i, c in enumerate(classes) if c.kind in STATIC_KINDS]
    lonely = [c.name for i, c in enumerate(classes) if i not in in_pair and c.kind not in STATIC_KINDS]
    if lonely:
        raise ValueError(f"temporal classes {lonely} need their time-reversed partner in the class set")
    return pairs, appearance


def _params_dict(seed: int, counts: dict[str, int], classes: Sequence[str], lengths, fps, sizes, crf) -> dict:
    return {"seed": seed, "videos_per_class": dict(counts), "classes": list(classes),
            "lengths": list(lengths), "fps": list(fps), "sizes": list(sizes), "crf": crf}


def _check_ownership(out: Path) -> None:
    """Refuse to replace the contents of a non-empty folder this generator did not write.

    Ours: the owner marker is there (written first, so a killed generation's folder stays ours)
    or ``manifest.json`` names this generator. Any other ``manifest.json`` is someone else's.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise TadaError(f"{out} exists and is not a folder; choose a new or empty folder for the synthetic dataset")
    if not any(out.iterdir()) or (out / OWNER_MARKER).is_file():
        return
    if read_manifest(out) is not None:
        return
    manifest_path = out / "manifest.json"
    found = "a manifest.json it did not write" if manifest_path.is_file() else "no manifest.json"
    raise TadaError(
        f"{out} is not empty and holds no synthetic dataset ({found}, no {OWNER_MARKER} marker): refusing to "
        "replace its videos/ and list files; choose a new or empty folder"
    )


def _make_one(job: tuple) -> None:
    path, cls_name, seed_key, lengths, fps, sizes, crf = job
    rng = np.random.default_rng(seed_key)
    params = _draw_params(rng, lengths=lengths, fps=fps, sizes=sizes)
    write_video(path, render_video(CLASSES[cls_name], rng, params), params.fps, crf=crf)


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    videos_per_class: dict[str, int] | None = None,
    classes: Sequence[str] = DEFAULT_CLASSES,
    lengths: tuple[int, int] = (24, 64),
    fps: tuple[int, int] = (24, 30),
    sizes: tuple[int, int] = (64, 112),
    crf: int = 18,
    workers: int | None = None,
) -> dict:
    """Write the dataset into ``out_dir`` (its ``videos/`` and list files are replaced) and return
    the manifest. ``videos_per_class`` maps split -> count (default train 60, val 20, test 30).
    ``workers`` encoder processes (default: the CPU count, at most 4) do not change the output."""
    started = time.perf_counter()
    counts = {"train": 60, "val": 20, "test": 30} if videos_per_class is None else dict(videos_per_class)
    if set(counts) != set(SPLITS) or any(n < 0 for n in counts.values()):
        raise ValueError(f"videos_per_class needs counts >= 0 for {SPLITS}, got {counts}")
    resolved = _resolve_classes(list(classes))
    pairs, appearance = _class_groups(resolved)
    out = Path(out_dir)
    _check_ownership(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OWNER_MARKER).write_text(f"{GENERATOR} writes this folder; it replaces videos/ and the list files\n")
    (out / "manifest.json").unlink(missing_ok=True)  # incomplete until written again
    shutil.rmtree(out / "videos", ignore_errors=True)
    jobs, lists = [], {s: [] for s in SPLITS}
    for s_idx, split in enumerate(SPLITS):
        (out / "videos" / split).mkdir(parents=True)
        for label, cls in enumerate(resolved):
            for i in range(counts[split]):
                rel = f"videos/{split}/{cls.slug}_{i:04d}.mp4"
                # Keyed by class name, not label: adding a class leaves the others' videos unchanged.
                key = [seed, s_idx, zlib.crc32(cls.name.encode()), i]
                jobs.append((str(out / rel), cls.name, key, tuple(lengths), tuple(fps), tuple(sizes), crf))
                lists[split].append(f"{rel} {label}\n")
    workers = min(os.cpu_count() or 1, 4) if workers is None else workers
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_make_one, jobs, chunksize=8))
    else:
        for job in jobs:
            _make_one(job)
    for split in SPLITS:
        (out / f"{split}_list.txt").write_text("".join(lists[split]))
    (out / "classes.txt").write_text("".join(f"{c.name}\n" for c in resolved))
    manifest = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "params": _params_dict(seed, counts, classes, lengths, fps, sizes, crf),
        "classes": [c.name for c in resolved],
        "pairs": pairs,
        "appearance_classes": appearance,
        "counts": {s: len(lists[s]) for s in SPLITS},
        "seconds": round(time.perf_counter() - started, 2),
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")
    return manifest


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The manifest of a complete dataset folder this generator wrote, or None if there is none
    (no ``manifest.json``, or one that is not valid JSON or names another writer)."""
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == GENERATOR else None


def ensure_dataset(out_dir: str | os.PathLike, **kwargs) -> dict:
    """Reuse ``out_dir`` when its manifest matches this generator version and these parameters;
    otherwise generate it. Takes the keyword arguments of :func:`generate_dataset`."""
    defaults = dict(seed=0, videos_per_class=None, classes=DEFAULT_CLASSES, lengths=(24, 64), fps=(24, 30),
                    sizes=(64, 112), crf=18)
    unknown = set(kwargs) - set(defaults) - {"workers"}
    if unknown:
        raise TypeError(f"ensure_dataset: unknown arguments {sorted(unknown)}")
    p = {**defaults, **{k: v for k, v in kwargs.items() if k != "workers"}}
    counts = p["videos_per_class"] or {"train": 60, "val": 20, "test": 30}
    wanted = _params_dict(p["seed"], counts, p["classes"], p["lengths"], p["fps"], p["sizes"], p["crf"])
    manifest = read_manifest(out_dir)
    if (manifest is not None and manifest.get("generator_version") == GENERATOR_VERSION
            and manifest.get("params") == wanted
            and all((Path(out_dir) / f"{s}_list.txt").is_file() for s in SPLITS)):
        return manifest
    return generate_dataset(out_dir, **kwargs)
