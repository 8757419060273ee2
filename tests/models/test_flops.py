"""FLOPs by torch's FlopCounterMode: TAda2D-R50's 33.02 / 43.13 GMACs and the `tada flops` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tada.models import create_model
from tada.models.flops import count, count_params
from tada.ops import TAdaConv2d

REPO = Path(__file__).resolve().parents[2]
K400_CFG = REPO / "configs" / "projects" / "tada" / "k400" / "tada2d_8x8.yaml"


def test_tada2d_r50_gmacs_match_spec_1_10():
    with torch.device("meta"):  # no memory, no compute: the counter only needs shapes
        model = create_model("tada2d_r50", num_classes=400)
    assert round(count(model, (1, 3, 8, 224, 224)).gmacs, 2) == 33.02
    report = count(model, (1, 3, 8, 256, 256))
    assert round(report.gmacs, 2) == 43.13
    assert report.params == 27_485_472
    assert set(report.by_op) <= {"aten.convolution", "aten.addmm", "aten.mm"}  # routing MLPs are GEMMs


def test_counts_the_tadaconv_as_one_conv_and_restores_train_mode():
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = TAdaConv2d(4, 6, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x, torch.ones(x.shape[0], 4, x.shape[2], 1, 1))

    model = Wrap().train()
    report = count(model, (2, 4, 3, 8, 8))
    assert report.macs == 2 * 3 * 6 * 4 * 9 * 4 * 4  # B*T frames x Cout x Cin x k*k x H'*W'
    assert model.training
    assert count_params(model) == 6 * 4 * 9


@pytest.mark.skipif(not K400_CFG.is_file(), reason="zoo config not present")
def test_flops_command_prints_params_and_gmacs(capsys):
    from tada.cli import main

    assert main(["flops", "--cfg", str(K400_CFG)]) == 0
    out = capsys.readouterr().out
    assert "27,485,472" in out
    assert "8x224x224: 33.02 GMACs" in out and "8x256x256: 43.13 GMACs" in out
    assert main(["flops", "--cfg", str(K400_CFG), "--json", "VIDEO.HEAD.NUM_CLASSES", "174"]) == 0
    assert '"params": 27022398' in capsys.readouterr().out
