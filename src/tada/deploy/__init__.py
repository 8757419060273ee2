"""Deployment: a model loaded once for many videos, exported graphs, and serving them.

:mod:`~tada.deploy.predictor` (``tada.Predictor``: whole videos, timelines, features),
:mod:`~tada.deploy.export` (ONNX and ``torch.export`` programs, verified against the eager model)
and :mod:`~tada.deploy.serving` (the sidecar that says how to feed an export, and an onnxruntime
predictor that needs no config and no checkpoint). Nothing is imported here: serving an ONNX
export loads neither torch nor the models.
"""
