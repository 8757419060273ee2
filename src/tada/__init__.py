"""tada: temporally-adaptive video recognition (TAdaConv, TAda2D)."""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    """``tada.Predictor`` without importing torch when only the version (or the CLI) is needed."""
    if name == "Predictor":
        from tada.deploy.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'tada' has no attribute {name!r}")
