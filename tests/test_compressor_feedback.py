"""The compressor's feedback topology (``compressor.feedback``) against independent references.

* A plain numpy/Python per-sample feedback compressor written here from the textbook
  structure (Giannoulis, Massberg & Reiss, "Digital Dynamic Range Compressor Design - A
  Tutorial and Analysis", JAES 60(6), 2012, fig. 1b: the detector reads the output; their
  eq. 4 soft knee), with the loop gain that keeps the time constants honest taken by a
  numerical derivative of that curve (not the code's closed form).
* The static curve, derived by hand: a loop whose gain falls ``R - 1`` dB per dB of
  *output* over the threshold settles where ``g = (1 - R)(x + g - T)``, so
  ``y - T = (x - T) / R``: the output rises 1/R dB per input dB (inside the knee, the
  fixed point is solved here with scipy's brentq).
* Time constants measured on step responses: 63.2 % of the gain change in ``attack_ms``
  (level step up) and ``release_ms`` (step down), for any ratio.
* Gradients: ``torch.autograd.gradcheck`` of the adjoint against finite differences, and
  finite, non-zero gradients for every compressor parameter through the compressor.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dmst.effects import compressor
from dmst.effects._dynamics import soft_knee
from dmst.effects._feedback import FeedbackGain

FS = 44100


def feedback_gain_request(level_db: float, threshold_db: float, ratio: float, knee_db: float) -> float:
    """The gain (dB) a feedback design asks for at an *output* level: Giannoulis eq. 4 with slope 1 - R."""
    over = level_db - threshold_db
    if 2 * over < -knee_db:
        return 0.0
    if 2 * over > knee_db:
        return (1 - ratio) * over
    return (1 - ratio) * (over + knee_db / 2) ** 2 / (2 * knee_db)


def reference_feedback(x: np.ndarray, fs, threshold_db, ratio, knee_db, attack_ms, release_ms, detector_rms=0.0,
                       rms_window_ms=20.0) -> np.ndarray:
    """Gain in dB per sample of a feedback compressor on (channels, n) x, plain Python in float64.

    The detector hears the output of the previous gain (linked peak, and a one-pole mean
    square of it, blended in dB); the gain moves toward what the curve asks for with the
    attack or release coefficient divided by the loop gain ``1 - d request / d level``.
    """
    a = 1 - math.exp(-1000 / (attack_ms * fs))
    r = 1 - math.exp(-1000 / (release_ms * fs))
    c = 1 - math.exp(-1000 / (rms_window_ms * fs))
    g, ms, h = 0.0, 0.0, 1e-5
    out = np.empty(x.shape[-1])
    for n, peak in enumerate(np.abs(x).max(axis=0).tolist()):
        y = peak * 10 ** (g / 20)
        ms = ms + c * (y * y - ms)
        level = (1 - detector_rms) * 20 * math.log10(max(y, 1e-6)) + detector_rms * 10 * math.log10(max(ms, 1e-12))
        want = feedback_gain_request(level, threshold_db, ratio, knee_db)
        slope = (feedback_gain_request(level + h, threshold_db, ratio, knee_db)
                 - feedback_gain_request(level - h, threshold_db, ratio, knee_db)) / (2 * h)
        k = a if want < g else r
        g = g + k / (1 - slope) * (want - g)
        out[n] = g
    return out


def _signal(n=FS // 3, seed=0, channels=2):
    rng = np.random.default_rng(seed)
    env = np.repeat(rng.uniform(0.01, 0.9, n // 700 + 1), 700)[:n]  # level jumps every 16 ms
    return rng.standard_normal((channels, n)) * env * 0.5


def _fb(x, **kw):
    base = dict(threshold_db=-20.0, ratio=4.0, knee_db=6.0, attack_ms=2.0, release_ms=60.0, makeup_gain_db=0.0,
                feedback=1.0)
    base.update(kw)
    return compressor(x, FS, **base, return_gain=True)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(ratio=12.0, knee_db=2.0, attack_ms=0.3, release_ms=30.0),
    dict(detector_rms=1.0, rms_window_ms=10.0, ratio=3.0, threshold_db=-26.0),
    dict(detector_rms=0.4, rms_window_ms=3.0, knee_db=12.0, attack_ms=8.0, release_ms=200.0),
])
def test_feedback_equals_a_plain_python_feedback_compressor(kw):
    """feedback 1: the gain equals the per-sample Python reference to 1e-6 dB (float64, render and training paths)."""
    x = _signal()
    p = dict(dict(threshold_db=-20.0, ratio=4.0, knee_db=6.0, attack_ms=2.0, release_ms=60.0), **kw)
    want = reference_feedback(x, FS, **p)
    xt = torch.from_numpy(x)[None]
    with torch.no_grad():
        _, g_render = _fb(xt, **kw)
    _, g_train = _fb(xt.clone().requires_grad_(), **kw)
    np.testing.assert_allclose(g_render[0].numpy(), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(g_train[0].detach().numpy(), want, rtol=0, atol=1e-6)
    assert want.min() < -6  # it really compresses


def _steady_output_db(level_db, **kw):
    """Output level (dB) of a constant-amplitude input (a square wave: |x| is constant) after settling."""
    n = FS // 2
    x = torch.full((1, 1, n), 10 ** (level_db / 20), dtype=torch.float64) * torch.sign(torch.sin(
        2 * math.pi * 100 * torch.arange(n, dtype=torch.float64) / FS) + 1e-9)
    with torch.no_grad():
        y, g = _fb(x, attack_ms=1.0, release_ms=20.0, **kw)
    return level_db + float(g[0, -1])


@pytest.mark.parametrize("ratio", [2.0, 4.0, 20.0])
def test_static_curve_above_the_knee_has_slope_one_over_ratio(ratio):
    """Above the knee the output rises 1/R dB per input dB and sits at T + (x - T) / R (0.05 dB): the nominal ratio, not 2 - 1/R.

    The knee (1 dB) is on the output level: it ends where the input is R * knee / 2 over the threshold.
    """
    t, knee = -40.0, 1.0
    for over in (12.0, 24.0, 36.0):
        assert _steady_output_db(t + over, threshold_db=t, ratio=ratio, knee_db=knee) == pytest.approx(t + over / ratio, abs=0.05)
    slope = (_steady_output_db(t + 36, threshold_db=t, ratio=ratio, knee_db=knee)
             - _steady_output_db(t + 24, threshold_db=t, ratio=ratio, knee_db=knee)) / 12
    assert slope == pytest.approx(1 / ratio, abs=0.005)
    assert abs(slope - 1 / (2 - 1 / ratio)) > 0.05  # what a loop with the feed-forward slope would give


def test_static_curve_in_the_knee_is_the_fixed_point_of_the_loop():
    """Inside the soft knee the settled gain solves g = request(x + g) (scipy brentq), within 0.02 dB; below it, 0 dB."""
    from scipy.optimize import brentq

    t, ratio, knee = -30.0, 6.0, 12.0
    for level in (-40.0, -36.5, -33.0, -30.0, -27.0, -24.5):
        want = brentq(lambda g: g - feedback_gain_request(level + g, t, ratio, knee), -40.0, 1e-9) \
            if 2 * (level - t) > -knee else 0.0
        assert _steady_output_db(level, threshold_db=t, ratio=ratio, knee_db=knee) - level == pytest.approx(want, abs=0.02)


def test_rms_feedback_compresses_a_sine_by_its_output_rms():
    """RMS detector (100 ms window) on a 1 kHz sine: the output RMS level is T + (rms_in - T) / R, within 0.3 dB."""
    n = FS
    level = -8.0  # peak dBFS; RMS 3 dB lower
    x = torch.from_numpy(10 ** (level / 20) * np.sin(2 * np.pi * 1000 * np.arange(n) / FS))[None, None]
    with torch.no_grad():
        y, _ = _fb(x, threshold_db=-30.0, ratio=3.0, knee_db=0.0, detector_rms=1.0, rms_window_ms=100.0,
                   attack_ms=5.0, release_ms=50.0)
    s = slice(n // 2, n)
    out_rms = 10 * math.log10(float((y[0, 0, s] ** 2).mean()))
    in_rms = level - 10 * math.log10(2)
    assert out_rms == pytest.approx(-30.0 + (in_rms + 30.0) / 3.0, abs=0.3)


def _cross_time_ms(g: np.ndarray, start: int, before: float, after: float) -> float:
    target = before + (1 - math.exp(-1)) * (after - before)
    seg = g[start:]
    i = int(np.argmax((seg <= target) if after < before else (seg >= target)))
    f = (target - seg[i - 1]) / (seg[i] - seg[i - 1])
    return (i - 1 + f) * 1000 / FS


@pytest.mark.parametrize("ratio,knee", [(2.0, 0.0), (8.0, 6.0), (20.0, 0.0)])
@pytest.mark.parametrize("attack_ms,release_ms", [(1.0, 50.0), (10.0, 300.0)])
def test_attack_and_release_are_63_percent_times_whatever_the_ratio(ratio, knee, attack_ms, release_ms):
    """Level step -40 -> -6 dBFS and back (threshold -24): 63 % of the gain change after attack_ms and release_ms, within 15 %."""
    n1, n2 = FS // 2, FS // 2 + int(2 * FS * release_ms / 1000) + FS // 5
    amp = np.full(n2 + int(8 * FS * release_ms / 1000), 10 ** (-40 / 20))
    amp[n1:n2] = 10 ** (-6 / 20)
    sq = np.sign(np.sin(2 * np.pi * 100 * np.arange(amp.size) / FS) + 1e-9)
    with torch.no_grad():
        _, g = _fb(torch.from_numpy(amp * sq)[None, None], threshold_db=-24.0, ratio=ratio, knee_db=knee,
                   attack_ms=attack_ms, release_ms=release_ms)
    g = g[0].numpy()
    low, high = float(g[n1 - 1]), float(g[n2 - 1])
    assert low == 0.0 and high == pytest.approx(-18 * (1 - 1 / ratio), abs=0.05)
    assert _cross_time_ms(g, n1, low, high) == pytest.approx(attack_ms, rel=0.15)
    assert _cross_time_ms(g, n2, high, float(g[-1])) == pytest.approx(release_ms, rel=0.15)


def test_fast_attack_at_a_high_ratio_stays_stable():
    """Ratio 20, attack 0.1 ms, a 1 ms RMS blend: no oscillation (the gain never rises above 0 dB or swings past the target)."""
    x = torch.from_numpy(_signal(seed=3))[None]
    with torch.no_grad():
        y, g = _fb(x, ratio=20.0, knee_db=0.0, attack_ms=0.1, release_ms=10.0, detector_rms=0.5, rms_window_ms=1.0)
    assert torch.isfinite(g).all() and float(g.max()) <= 1e-9
    assert float(g.min()) > -60


def test_feedback_blend_is_in_db_and_zero_is_feed_forward_exactly():
    """feedback f gives (1 - f) * feed-forward gain + f * feedback gain in dB; f = 0 renders bit for bit as before."""
    x = torch.from_numpy(_signal(seed=4))[None].float()
    with torch.no_grad():
        _, g_ff = _fb(x, feedback=0.0, detector_rms=0.3)
        _, g_fb = _fb(x, feedback=1.0, detector_rms=0.3)
        _, g_mid = _fb(x, feedback=0.35, detector_rms=0.3)
        y0 = _fb(x, feedback=0.0)[0]
        y_v2 = compressor(x, FS, -20.0, 4.0, 6.0, 2.0, 60.0, 0.0)
    assert torch.allclose(g_mid, 0.65 * g_ff + 0.35 * g_fb, atol=1e-4)
    assert float((g_ff - g_fb).abs().max()) > 0.5  # the topologies differ
    assert torch.equal(y0, y_v2)


def test_adjoint_passes_gradcheck():
    """The backward recursion equals finite differences for the input and every parameter (float64, soft knee, RMS blend)."""
    torch.manual_seed(0)
    n = 300
    peak = (torch.rand(2, n, dtype=torch.float64) * torch.linspace(0.05, 1, n, dtype=torch.float64)).requires_grad_()

    def param(v):
        return torch.tensor(v, dtype=torch.float64, requires_grad=True)

    args = [param([0.3, 0.05]), param([0.01, 0.02]), param([0.1, 0.3]), param([0.4, 0.8]), param([-20.0, -12.0]),
            param([4.0, 2.5]), param([6.0, 2.0])]
    assert torch.autograd.gradcheck(lambda *a: FeedbackGain.apply(*a, 1e-6), (peak, *args), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_every_compressor_parameter_gets_a_finite_nonzero_gradient_with_feedback():
    """feedback 0.6 with an RMS blend and a linear-envelope share: all 11 parameters and the input get finite, non-zero grads."""
    x = torch.from_numpy(_signal(seed=5, n=FS // 5))[None].float().requires_grad_()
    p = {k: torch.tensor([v], requires_grad=True) for k, v in dict(
        threshold_db=-24.0, ratio=4.0, knee_db=6.0, attack_ms=3.0, release_ms=60.0, makeup_gain_db=2.0,
        detector_rms=0.4, rms_window_ms=10.0, linear_envelope=0.3, feedback=0.6).items()}
    y = compressor(x, FS, **p)
    (y ** 2).mean().backward()
    for k, v in p.items():
        assert torch.isfinite(v.grad).all() and float(v.grad.abs().max()) > 0, k
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().max()) > 0


def test_render_path_equals_training_path_float32():
    """Per-item settings in float32: the compiled render loop and the differentiable path agree to 1e-4 dB of gain."""
    x = torch.from_numpy(_signal(seed=6)).float()[None].expand(3, -1, -1).contiguous()
    args = dict(threshold_db=torch.tensor([-30.0, -18.0, -24.0]), ratio=torch.tensor([4.0, 2.0, 8.0]),
                knee_db=torch.tensor([6.0, 0.0, 12.0]), attack_ms=torch.tensor([5.0, 0.3, 20.0]),
                release_ms=torch.tensor([100.0, 40.0, 300.0]), makeup_gain_db=torch.tensor([3.0, 0.0, 1.0]),
                detector_rms=torch.tensor([0.3, 1.0, 0.0]), rms_window_ms=torch.tensor([5.0, 30.0, 20.0]),
                linear_envelope=torch.tensor([0.6, 0.0, 1.0]), feedback=torch.tensor([0.5, 1.0, 0.2]))
    with torch.no_grad():
        y_r, g_r = compressor(x, FS, **args, return_gain=True)
    y_t, g_t = compressor(x, FS, **{k: v.clone().requires_grad_() for k, v in args.items()}, return_gain=True)
    assert torch.allclose(g_r, g_t.detach(), atol=1e-4)
    assert torch.allclose(y_r, y_t.detach(), atol=1e-5)
    assert float(g_r.abs().max()) > 6


def test_soft_knee_is_giannoulis_eq4_and_a_hard_knee_at_zero_width():
    """The shared static curve: eq. 4 written out (1e-12), and at knee 0 exactly min(0, slope * over) (as gate and de-esser use it)."""
    over = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    slope, knee = 1 / 4 - 1, 8.0
    o = over.numpy()
    want = np.where(o < -knee / 2, 0.0, np.where(o > knee / 2, slope * o, slope * (o + knee / 2) ** 2 / (2 * knee)))
    np.testing.assert_allclose(soft_knee(over, slope, knee).numpy(), want, rtol=0, atol=1e-12)
    assert torch.equal(soft_knee(over, -1.0, 0.0), torch.clamp(-over, max=0.0))
