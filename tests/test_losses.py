"""The training losses: the loudness term against the BS.1770 meter and against an analytic gain."""
import math

import pytest
import torch

from dmst.effects.eq import biquad, sosfilt_fft
from dmst.effects.gain import integrated_loudness
from dmst.losses import MixLoss, level_dynamics_loss, loudness_loss

SR = 44100


def _voice_like(seconds=3.0, seed=0):
    """Noise bursts at different levels with short gaps: blocks the gates must sort out."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    x = torch.randn(1, 1, n, generator=g) * 0.05
    env = torch.ones(n)
    for start in range(0, n, SR // 2):
        env[start: start + SR // 2] = 10 ** (-float(torch.randint(0, 20, (1,), generator=g)) / 20)
    env[SR: SR + SR // 3] = 0.0  # a pause
    return x * env


@pytest.mark.parametrize("gain_db", [-6.0, -1.5, 0.0, 2.5])
def test_loudness_loss_of_a_gain_is_that_gain(gain_db):
    target = _voice_like()
    pred = target * 10 ** (gain_db / 20)
    assert float(loudness_loss(pred, target, SR)) == pytest.approx(abs(gain_db) / 10, abs=1e-5)


def test_loudness_loss_matches_the_bs1770_meter_for_a_filtered_signal():
    """A brighter, louder version: the loss equals the difference the integrated-loudness meter reads."""
    target = _voice_like(seed=1)
    shelf = biquad("high_shelf", 3000.0, 6.0, 0.707, SR).reshape(1, 1, 6)
    pred = sosfilt_fft(target, shelf) * 10 ** (1.0 / 20)
    meter = float(integrated_loudness(pred, SR)[0] - integrated_loudness(target, SR)[0])
    assert meter > 1.0  # the test means something: the shelf and the gain both add loudness
    # The loss gates on the target's blocks, the meter on each signal's own; with these levels they agree.
    assert float(loudness_loss(pred, target, SR)) * 10 == pytest.approx(abs(meter), abs=0.02)


def test_loudness_loss_gradient_points_to_the_target_level():
    target = _voice_like(seed=2)
    gain_db = torch.tensor(3.0, requires_grad=True)
    loss = loudness_loss(target * 10 ** (gain_db / 20), target, SR)
    loss.backward()
    assert gain_db.grad > 0  # too loud: the loss falls as the gain falls
    assert float(gain_db.grad) == pytest.approx(0.1, rel=1e-3)  # d(|g| / 10) / dg


def test_silent_target_gives_zero_loudness_loss_not_nan():
    target = torch.zeros(2, 1, SR)
    pred = torch.randn(2, 1, SR) * 0.1
    value = loudness_loss(pred, target, SR)
    assert math.isfinite(float(value)) and float(value) == 0.0


def test_mix_loss_is_zero_on_the_target_and_grows_with_a_level_error():
    target = _voice_like(seed=3)
    loss = MixLoss(SR)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    small, large = float(loss(target * 10 ** (1 / 20), target)), float(loss(target * 10 ** (4 / 20), target))
    assert 0 < small < large
    assert float(level_dynamics_loss(target * 10 ** (4 / 20), target, SR)) > 0
