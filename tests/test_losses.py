"""The training losses: the loudness term against the BS.1770 meter and against an analytic gain."""
import math

import pytest
import torch

from dmst.effects.eq import biquad, sosfilt_fft
from dmst.effects.gain import integrated_loudness
from dmst.losses import MixLoss, crest_envelope_db, crest_loss, level_dynamics_loss, loudness_loss, micro_dynamics_loss, sibilance_loss

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


def _mrstft_reference():
    """auraloss's own multi-resolution STFT loss at dmst's resolutions: the independent reference."""
    import auraloss

    sizes = [256, 1024, 4096]
    return auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=sizes, hop_sizes=[s // 4 for s in sizes], win_lengths=sizes)


def _side_reference(pred, target, sizes=(256, 1024, 4096)):
    """The side term by its definition: STFTs of the time-domain side and mid signals."""
    def mag(x, n):
        s = torch.stft(x, n, hop_length=n // 4, window=torch.hann_window(n), return_complex=True)
        return torch.sqrt(s.real ** 2 + s.imag ** 2 + 1e-16)
    side_p, side_t = 0.5 * (pred[:, 0] - pred[:, 1]), 0.5 * (target[:, 0] - target[:, 1])
    mid_t = 0.5 * (target[:, 0] + target[:, 1])
    return sum((mag(side_p, n) - mag(side_t, n)).abs().mean() / mag(mid_t, n).mean() for n in sizes) / len(sizes)


@pytest.mark.parametrize("chunk", [None, 2, 1], ids=["whole batch", "in twos", "one by one"])
@pytest.mark.parametrize("layout", ["stereo", "dual_mono"])
def test_mrstft_and_side_terms_match_auraloss_and_their_definition_with_their_gradients(layout, chunk):
    """One STFT per signal and resolution (side and mid from the channels' spectra; a dual-mono render
    transformed once), the batch of 3 taken whole or a few items at a time (training's memory plan): the same
    values and gradients as auraloss on the whole batch and the time-domain side."""
    g = torch.Generator().manual_seed(4)
    n = int(1.5 * SR)
    source = torch.randn(3, 2 if layout == "stereo" else 1, n, generator=g) * 0.1
    target = torch.randn(3, 2, n, generator=g) * 0.1
    grads, values = [], []
    for terms_of in (lambda p: MixLoss(SR, chunk=chunk).terms(p, target),
                     lambda p: {"mrstft": _mrstft_reference()(p, target), "side": _side_reference(p, target)}):
        leaf = source.clone().requires_grad_()
        pred = leaf.expand(-1, 2, -1).contiguous() if layout == "dual_mono" else leaf  # a centred render
        terms = terms_of(pred)
        (terms["mrstft"] + terms["side"]).backward()
        values.append((float(terms["mrstft"]), float(terms["side"])))
        grads.append(leaf.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-5)
    assert values[0][1] > 0.1  # the side term is not trivially 0 here: the target is wide
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 1e-4


def _sine(amplitude=0.5, hz=1000.0, seconds=1.0):
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * hz * t)).float().reshape(1, 1, -1)


def test_local_crest_of_a_sine_is_3_db():
    """A sine's peak is sqrt(2) times its RMS: 3.01 dB in every full 50 ms window (50 periods of 1 kHz)."""
    crest, _ = crest_envelope_db(_sine(), SR)
    assert crest[0, :-2] == pytest.approx(torch.full_like(crest[0, :-2], 20 * math.log10(math.sqrt(2))), abs=0.02)


def test_crest_loss_ignores_a_gain_and_measures_a_clipped_peak():
    x = _sine()
    assert float(crest_loss(x * 10 ** (-7 / 20), x, SR)) == pytest.approx(0.0, abs=1e-3)  # the floors: 0.002 dB
    # Clipped at half its amplitude: the crest factor, computed here with numpy on the same samples, falls.
    clipped = x.clamp(-0.25, 0.25)
    v = clipped[0, 0].double().numpy()
    crest_clipped = 20 * math.log10(abs(v).max() / float((v ** 2).mean()) ** 0.5)
    expected = (20 * math.log10(math.sqrt(2)) - crest_clipped) / 10
    assert expected > 0.1  # the clipping is audible in the number
    assert float(crest_loss(clipped, x, SR)) == pytest.approx(expected, abs=0.005)


def test_mix_loss_has_a_crest_term_only_when_weighted():
    x = _voice_like()
    assert "crest" not in MixLoss(SR).terms(x, x, weighted_only=True)
    loss = MixLoss(SR, crest_weight=1.0)
    clipped = x.clamp(-0.02, 0.02)
    assert float(loss.terms(clipped, x)["crest"]) > 0.05
    assert float(loss(clipped, x)) > float(MixLoss(SR)(clipped, x))


def test_micro_dynamics_loss_reads_the_analytic_level_spread():
    """A target whose 50 ms frames alternate between two levels 20 dB apart sits, in each 400 ms frame, at
    10 log10(1 / 0.505) = +2.97 dB and 10 log10(0.01 / 0.505) = -17.03 dB from its surroundings, 10.0 dB on
    average; a steady prediction sits at 0 dB everywhere.  So the loss (dB / 10) is 1.0, and 0 against itself."""
    sr, win = 8000, 400  # 50 ms frames
    loud = torch.ones(win)
    target = torch.cat([loud, 0.1 * loud] * 40)[None, None].double()
    steady = torch.ones_like(target)
    assert float(micro_dynamics_loss(steady, target, sr, windows_s=(0.05,))) == pytest.approx(1.0, abs=1e-6)
    assert float(micro_dynamics_loss(target, target, sr, windows_s=(0.05,))) == 0.0


def test_micro_dynamics_loss_is_the_foreign_benchmarks_meter_and_has_a_gradient():
    """Over 10/50/200 ms frames against 8x longer ones, the loss is bench/foreign.py's micro-dynamics error
    (numpy, written apart) divided by 10, on stereo against mono noise of different modulations."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import foreign

    sr = 44100
    torch.manual_seed(0)
    t = torch.arange(3 * sr) / sr
    pred = (torch.randn(1, 1, t.numel()) * (1 + 0.9 * torch.sin(2 * math.pi * 3 * t))).double().requires_grad_(True)
    target = (torch.randn(1, 2, t.numel()) * (1 + 0.9 * torch.sin(2 * math.pi * 1.3 * t))).double()
    loss = micro_dynamics_loss(pred, target, sr)
    assert float(loss) * 10 == pytest.approx(foreign.micro_dynamics_error_db(pred[0].detach().numpy(), target[0].numpy(), sr), rel=1e-9)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_sibilance_loss_reads_the_analytic_band_share_and_has_a_gradient():
    """Frames of a 1 kHz tone (amplitude 1) plus a 7 kHz one (amplitude 0.5 in the target, 0.25 in pred): the 5-10
    kHz share of the power is 0.25 / 1.25 against 0.0625 / 1.0625, so the esses sit
    10 log10(0.2 / 0.0588) = 5.31 dB lower (the loss is in dB / 10); exact tones on FFT bins, Hann-windowed."""
    sr, n_fft = 44100, 1024  # the loss's 20 ms frame at 44.1 kHz
    t = torch.arange(40 * n_fft, dtype=torch.float64) / sr
    f_low, f_high = 24 * sr / n_fft, 163 * sr / n_fft  # 1034 Hz and 7020 Hz, on bins
    low = torch.sin(2 * math.pi * f_low * t)
    target = (low + 0.5 * torch.sin(2 * math.pi * f_high * t))[None, None]
    pred = (low + 0.25 * torch.sin(2 * math.pi * f_high * t))[None, None].requires_grad_(True)
    expected = 10 * math.log10((0.25 / 1.25) / (0.0625 / 1.0625))
    loss = sibilance_loss(pred, target, sr)
    assert float(loss) * 10 == pytest.approx(expected, abs=0.01)
    assert float(sibilance_loss(target, target, sr)) == 0.0
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
