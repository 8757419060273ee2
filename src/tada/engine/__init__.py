"""Training and evaluation: SGD with the official schedule, DDP, AMP, exact resume, multi-view test.

    from tada.engine import train, test, run_pipeline
    result = train(cfg)                       # trains (or resumes) in cfg.OUTPUT_DIR
    results = test(cfg, views=10, crops=3)    # OUTPUT_DIR/test_10x3/results.json
    run_pipeline(cfg)                         # what `tada train` / runs/run.py do
"""

from tada.engine.checkpointing import latest_checkpoint, list_checkpoints
from tada.engine.distributed import DistContext, EngineError, init_distributed
from tada.engine.evaluate import resolve_test_checkpoint, test
from tada.engine.interrupt import TrainingInterrupted
from tada.engine.metrics import VideoAggregator, topk_correct
from tada.engine.optim import build_optimizer, lr_at, lr_from_config, param_groups
from tada.engine.ownership import OutputDirInUseError
from tada.engine.pipeline import run_pipeline, run_tests
from tada.engine.samplers import EvalSampler, SeededDataset, TrainSampler
from tada.engine.trainer import NonFiniteLossError, TrainResult, train, validate

__all__ = [
    "DistContext",
    "EngineError",
    "EvalSampler",
    "NonFiniteLossError",
    "OutputDirInUseError",
    "SeededDataset",
    "TrainResult",
    "TrainSampler",
    "TrainingInterrupted",
    "VideoAggregator",
    "build_optimizer",
    "init_distributed",
    "latest_checkpoint",
    "list_checkpoints",
    "lr_at",
    "lr_from_config",
    "param_groups",
    "resolve_test_checkpoint",
    "run_pipeline",
    "run_tests",
    "test",
    "topk_correct",
    "train",
    "validate",
]
