"""Validation drops failed items from every field of a batch, so the GPU decode route still lines up."""

import numpy as np
import simplejpeg
import torch

from tada.data.annotations import VideoEntry
from tada.data.datasets import ClipSpec, VideoDataset
from tada.data.decode import DecodeError
from tada.data.frames import decode_jpegs_cpu, gpu_decode_transform
from tada.data.loader import collate
from tada.engine.trainer import _select


class _JpegReader:
    """A frame folder in memory: 'HxW' names its frame size, 'bad' cannot be opened."""

    def __init__(self, path):
        if path == "bad":
            raise DecodeError(path, "broken")
        h, w = map(int, path.split("x"))
        self.height, self.width, self.num_frames, self.fps = h, w, 20, 30.0
        frames = np.random.default_rng(h * 7 + w).integers(0, 256, (20, h, w, 3), dtype=np.uint8)
        self.jpegs = [simplejpeg.encode_jpeg(f, quality=90) for f in frames]

    def get_jpeg_bytes(self, idx):
        return [self.jpegs[i] for i in idx]

    def get_frames(self, idx):
        return np.stack([simplejpeg.decode_jpeg(self.jpegs[i]) for i in idx])

    def close(self):
        pass


def test_failed_val_items_are_dropped_from_tensors_and_lists():
    entries = [VideoEntry(path=p, label=i) for i, p in enumerate(["240x320", "bad", "320x240"])]

    def spec(gpu):
        return ClipSpec("interval_based", 4, 2, 30, (224, 340), 224, 256, 224, (0.45,) * 3, (0.225,) * 3,
                        gpu_resize=gpu, gpu_decode=gpu)

    cpu = collate([VideoDataset(entries, split="val", spec=spec(False), open_reader=_JpegReader)[i] for i in range(3)])
    gpu = collate([VideoDataset(entries, split="val", spec=spec(True), open_reader=_JpegReader)[i] for i in range(3)])
    keep = ~gpu["failed"].bool()
    kept = _select(gpu, keep)
    assert len(kept["jpegs"]) == kept["box"].shape[0] == 2 and kept["path"] == ["240x320", "320x240"]
    video = gpu_decode_transform(kept, mean=(0.45,) * 3, std=(0.225,) * 3, device="cpu",
                                 decode=decode_jpegs_cpu)["video"]
    # two routes of float32 resize arithmetic (batched vs per clip): equal up to rounding; a wrong clip is far off
    torch.testing.assert_close(video, cpu["video"][keep], rtol=0, atol=1e-5)
