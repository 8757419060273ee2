"""Mixup/CutMix draws, mixed clips and soft targets; model EMA arithmetic."""

import numpy as np
import pytest
import torch
from engine_standins import CONFIG
from torch import nn

from tada.config import load_config
from tada.engine.ema import ModelEma
from tada.engine.mixing import Mixer, cutmix_box, mixer_from_config, smoothed_one_hot


def batch(n=6, k=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 2, 8, 10, generator=g, dtype=torch.float64), torch.arange(n) % k


def test_smoothed_one_hot_values():
    y = smoothed_one_hot(torch.tensor([2, 0]), 4, smoothing=0.1)
    assert torch.allclose(y, torch.tensor([[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]]))


def test_mixup_mixes_clips_and_targets_with_the_reversed_batch():
    mixer = Mixer(num_classes=5, mixup_alpha=0.8, label_smoothing=0.1)
    video, labels = batch()
    lam, use_cutmix = mixer.draw(np.random.default_rng(7))
    assert not use_cutmix and 0 < lam < 1
    mixed, targets = mixer(video.clone(), labels, rng=np.random.default_rng(7))
    assert torch.allclose(mixed, lam * video + (1 - lam) * video.flip(0))
    y = smoothed_one_hot(labels, 5, smoothing=0.1)
    assert torch.allclose(targets, (lam * y + (1 - lam) * y.flip(0)).float())
    assert torch.allclose(targets.sum(1), torch.ones(6))


def test_cutmix_pastes_one_box_into_every_frame_and_corrects_lam():
    mixer = Mixer(num_classes=5, cutmix_alpha=1.0)
    video, labels = batch()
    for seed in range(20):
        mixed, targets = mixer(video.clone(), labels, rng=np.random.default_rng(seed))
        pasted = (mixed != video).any(dim=(0, 1, 2))  # (H, W) where any clip changed
        changed = mixed == video.flip(0)
        assert changed[..., pasted].all()  # the box holds the reversed batch, on all frames
        area = pasted.double().mean().item()
        i = int(labels[0])
        assert targets[0, i].item() == pytest.approx(1 - area + (area if int(labels[-1]) == i else 0), abs=1e-6)


def test_draw_statistics_follow_prob_switch_prob_and_beta():
    mixer = Mixer(num_classes=5, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.6, switch_prob=0.3)
    rng = np.random.default_rng(0)
    draws = [mixer.draw(rng) for _ in range(20000)]
    mixed = [(lam, cut) for lam, cut in draws if lam < 1.0]
    assert len(mixed) / len(draws) == pytest.approx(0.6, abs=0.015)
    cut = np.array([lam for lam, c in mixed if c])
    mix = np.array([lam for lam, c in mixed if not c])
    assert len(cut) / len(mixed) == pytest.approx(0.3, abs=0.015)
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1))
    assert cut.mean() == pytest.approx(0.5, abs=0.02) and cut.var() == pytest.approx(1 / 12, rel=0.08)
    assert mix.mean() == pytest.approx(0.5, abs=0.02) and mix.var() == pytest.approx(1 / (4 * 2.6), rel=0.08)


def test_cutmix_box_sides_and_minmax():
    rng = np.random.default_rng(0)
    y0, y1, x0, x1 = cutmix_box(100, 200, lam=0.75, rng=rng)
    assert (y1 - y0) <= 50 and (x1 - x0) <= 100  # sqrt(1 - 0.75) = 0.5 of each side, clipped
    for _ in range(200):
        y0, y1, x0, x1 = cutmix_box(100, 200, lam=0.5, rng=rng, minmax=(0.2, 0.4))
        assert 20 <= y1 - y0 < 40 and 40 <= x1 - x0 < 80 and y1 <= 100 and x1 <= 200


def test_mixer_from_config():
    cfg = load_config(CONFIG)
    assert mixer_from_config(cfg.AUGMENTATION, 7) is None
    cfg = load_config(CONFIG, ["AUGMENTATION.MIXUP.ENABLE", "true", "AUGMENTATION.MIXUP.ALPHA", "0.8",
                               "AUGMENTATION.CUTMIX.ENABLE", "true", "AUGMENTATION.CUTMIX.ALPHA", "1.0",
                               "AUGMENTATION.LABEL_SMOOTHING", "0.1"])
    m = mixer_from_config(cfg.AUGMENTATION, 7)
    assert (m.mixup_alpha, m.cutmix_alpha, m.prob, m.switch_prob, m.label_smoothing) == (0.8, 1.0, 1.0, 0.5, 0.1)
    with pytest.raises(ValueError, match="MIXUP.ALPHA is 0"):
        mixer_from_config(load_config(CONFIG, ["AUGMENTATION.MIXUP.ENABLE", "true"]).AUGMENTATION, 7)
    with pytest.raises(ValueError, match="MODE"):
        mixer_from_config(load_config(CONFIG, ["AUGMENTATION.MIXUP.ENABLE", "true", "AUGMENTATION.MIXUP.ALPHA", "1",
                                               "AUGMENTATION.MIXUP.MODE", "elem"]).AUGMENTATION, 7)


def test_model_ema_follows_with_its_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ModelEma(model, 0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model.train()
    model(torch.randn(4, 3))  # BN statistics move, num_batches_tracked becomes 1
    ema.update(model)
    now = model.state_dict()
    got = ema.state_dict()
    for k, v in start.items():
        if v.is_floating_point():
            assert torch.allclose(got[k], 0.9 * v + 0.1 * now[k]), k
        else:
            assert torch.equal(got[k], now[k]), k
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="DECAY"):
        ModelEma(model, 1.0)
