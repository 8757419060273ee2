"""Reading and writing model checkpoints: official ``.pyth`` files, ours, bare state dicts, ImageNet init.

The public face of :mod:`tada.engine.checkpointing`, which implements them (and the training
checkpoints of a run). Every file is read with ``torch.load(weights_only=True)``: a pickle that
would construct arbitrary objects (and so could run code) is refused. Loading is strict by default
and names every missing, unexpected and mis-shaped key (see ``docs/design.md``).
"""

from tada.engine.checkpointing import (
    CheckpointError,
    InitReport,
    LoadedCheckpoint,
    format_names,
    load_checkpoint,
    load_in1k,
    load_state_dict_file,
    read_checkpoint,
    save_checkpoint,
    split_state,
    unwrap,
)

__all__ = [
    "CheckpointError",
    "InitReport",
    "LoadedCheckpoint",
    "format_names",
    "load_checkpoint",
    "load_in1k",
    "load_state_dict_file",
    "read_checkpoint",
    "save_checkpoint",
    "split_state",
    "unwrap",
]
