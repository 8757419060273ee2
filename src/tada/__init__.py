"""tada: temporally-adaptive video recognition (TAdaConv, TAda2D)."""

__version__ = "0.1.0"
