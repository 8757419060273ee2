"""MODEL.CALIBRATION_CLAMP: the config switch of the calibration-range clamp (tada.ops.track_calibration_range)."""

from __future__ import annotations

import pytest
import torch

from tada.config import ConfigError, load_config
from tada.models import build_model

SMALL = ["VIDEO.BACKBONE.DEPTH", "26", "VIDEO.BACKBONE.NUM_FILTERS", "[8, 16, 32, 64, 128]",
         "VIDEO.BACKBONE.NUM_OUT_FEATURES", "128", "VIDEO.HEAD.NUM_CLASSES", "3"]


def test_off_by_default_on_by_the_key_with_bn_momentum():
    cfg = "configs/projects/tada/k400/tada2d_8x8.yaml"
    assert load_config(cfg).MODEL.CALIBRATION_CLAMP is False  # the official configs keep the official function
    plain = build_model(load_config(cfg, SMALL))
    assert not any("alpha_" in k for k in plain.state_dict())
    clamped = build_model(load_config(cfg, [*SMALL, "MODEL.CALIBRATION_CLAMP", "true", "BN.MOMENTUM", "0.05"]))
    routes = [m for m in clamped.modules() if getattr(m, "range_momentum", None) is not None]
    assert len(routes) == 8 and all(m.range_momentum == 0.05 for m in routes)
    # the official keys are all there, plus the two range buffers per routing function
    extra = set(clamped.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(clamped.state_dict())
    assert len(extra) == 16 and all(k.endswith(("b_rf.alpha_low", "b_rf.alpha_high")) for k in extra)
    # a checkpoint of the plain model loads strictly and computes the same function
    clamped.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(clamped.eval()(x), plain.eval()(x))


def test_a_model_without_routing_functions_is_a_config_error():
    cfg = load_config("configs/projects/tada/synthetic/tsn.yaml", [*SMALL, "MODEL.CALIBRATION_CLAMP", "true"])
    with pytest.raises(ConfigError, match="MODEL.CALIBRATION_CLAMP.*no RouteFuncMLP"):
        build_model(cfg)
