"""Fine-tune an ImageNet ResNet-50, made temporally adaptive by ``tadafy``, on your own folder of videos.

Your videos, one sub-folder per class::

    my_videos/
        opening_door/  a.mp4  b.mp4 ...
        closing_door/  c.mp4 ...

and timm's ResNet-50 ImageNet weights as a local file (a ``.pth``/``.bin`` state dict, or the hub's
``model.safetensors``; nothing is downloaded)::

    python examples/tadafy_finetune.py --videos my_videos --weights resnet50_a1_in1k.safetensors \
        --out output/my_tadafy [--gpus 1] [KEY VALUE ...]

What it does:

1. writes ``train_list.txt`` / ``val_list.txt`` / ``classes.txt`` into ``OUT/lists`` (a fixed
   fraction of each class's videos, chosen by seed, is held out for validation and the final test);
2. converts a ``.safetensors`` file to a torch state dict (the engine reads torch files only);
3. builds the model of ``configs/projects/tada/tadafy/timm_resnet50_finetune.yaml`` and loads the
   weights into it once, so that a wrong file fails in seconds, not after data loading starts;
4. runs ``tada train`` on it: ImageNet-initialised (``TRAIN.INIT in1k``), validation every epoch,
   then the multi-view test; checkpoints, logs and ``results.json`` land in ``OUT``.

Without timm installed, ``--backbone resnet50`` uses tada's own ResNet-50 (torchvision's module
names), which loads the same timm or torchvision ResNet-50 state dicts. Any extra ``KEY VALUE``
pairs override the config (``OPTIMIZER.MAX_EPOCH 5``, ``DATA.NUM_INPUT_FRAMES 16``, ...).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "projects" / "tada" / "tadafy" / "timm_resnet50_finetune.yaml"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


def write_lists(videos: Path, lists: Path, *, val_fraction: float, seed: int) -> list[str]:
    """Class names (sorted sub-folder names) and the two video lists; every class needs >= 2 videos."""
    from tada.fileio import atomic_open

    classes = sorted(p.name for p in videos.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise SystemExit(f"{videos}: expected one sub-folder per class (at least 2), found {classes}")
    rng = random.Random(seed)
    train, val = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (videos / name).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if len(files) < 2:
            raise SystemExit(f"{videos / name}: {len(files)} videos; each class needs at least 2 (train and val)")
        rng.shuffle(files)
        held = max(1, round(len(files) * val_fraction))
        val += [f"{f.relative_to(videos)} {label}" for f in files[:held]]
        train += [f"{f.relative_to(videos)} {label}" for f in files[held:]]
    lists.mkdir(parents=True, exist_ok=True)
    for filename, lines in (("classes.txt", classes), ("train_list.txt", train), ("val_list.txt", val)):
        with atomic_open(lists / filename) as fh:
            fh.write("\n".join(lines) + "\n")
    print(f"{len(classes)} classes, {len(train)} training and {len(val)} validation videos -> {lists}")
    return classes


def torch_weights(path: Path, out_dir: Path) -> Path:
    """``path`` itself, or a torch copy of a ``.safetensors`` file."""
    if path.suffix != ".safetensors":
        return path
    import torch

    from tada.fileio import atomic_open

    try:
        from safetensors.torch import load_file
    except ImportError:
        raise SystemExit(f"{path}: reading .safetensors needs the safetensors package (timm installs it): "
                         f"pip install safetensors") from None

    target = out_dir / (path.stem + ".pth")
    with atomic_open(target, "wb") as fh:
        torch.save(load_file(str(path)), fh)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", required=True, type=Path, help="folder with one sub-folder of videos per class")
    parser.add_argument("--weights", required=True, type=Path, help="ImageNet ResNet-50 weights (local file)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (lists, checkpoints, results)")
    parser.add_argument("--backbone", default="timm:resnet50",
                        help="2-D backbone: timm:<name> or a registered one (default timm:resnet50)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to train on (0 = CPU)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="videos of each class held out (0.2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    args = parser.parse_args(argv)

    from tada import cli
    from tada.checkpoint import load_in1k
    from tada.config import load_config
    from tada.models import build_model

    out = args.out.resolve()
    lists = out / "lists"
    classes = write_lists(args.videos.resolve(), lists, val_fraction=args.val_fraction, seed=args.seed)
    weights = torch_weights(args.weights.resolve(), out)
    overrides = [
        "DATA.DATA_ROOT_DIR", str(args.videos.resolve()), "DATA.ANNO_DIR", str(lists),
        "VIDEO.HEAD.NUM_CLASSES", str(len(classes)), "VIDEO.TADAFY.BACKBONE", args.backbone,
        "TRAIN.IN1K_WEIGHTS", str(weights), "OUTPUT_DIR", str(out), "NUM_GPUS", str(args.gpus),
        "RANDOM_SEED", str(args.seed), *args.opts,
    ]
    report = load_in1k(build_model(load_config(CONFIG, overrides)), weights)  # fail early on a wrong file
    print(f"{weights}: {len(report.loaded)} tensors fit the tadafied {args.backbone} "
          f"({len(report.missing)} new TAda/head tensors keep their init; dropped {report.dropped})")
    return cli.main(["train", "--cfg", str(CONFIG), *overrides])


if __name__ == "__main__":
    sys.exit(main())
