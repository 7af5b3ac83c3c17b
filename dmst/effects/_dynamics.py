"""Pieces shared by the dynamics effects (compressor, de-esser, gate, limiter): the static curve, gain
ballistics and sliding windows.

The static curve (:func:`soft_knee`) is Giannoulis, Massberg and Reiss's soft knee
("Digital Dynamic Range Compressor Design - A Tutorial and Analysis", JAES 60(6), 2012,
eq. 4), written once: the compressor, the de-esser (an infinite ratio, a hard knee) and
the gate (mirrored: the level under the threshold) all call it; the compiled loops of
:mod:`._ballistics` emit the same arithmetic from one IR helper.

The ballistics are the compressor's (:mod:`dmst.effects.compressor`): in the dB domain,
a peak hold with exponential release, then an attack-only smoother, so that a step
reaches 63 % of its change after ``attack_ms`` (gain going down) and recovers 63 %
after ``release_ms`` (gain coming back).  Training runs them on torchcomp's
``compressor_core``; rendering on the compiled loop of :mod:`._ballistics`.

Sliding maxima use the van Herk / Gil-Werman scheme (block-wise prefix and suffix
maxima, two ``cummax`` passes): O(n) whatever the window, and differentiable.
"""
from __future__ import annotations

import math
import warnings

import torch

from ._ballistics import ballistics

KNEE_FLOOR_DB = 1e-6  # a knee narrower than this is a hard knee (and no division by zero)


def _compressor_core():
    """torchcomp's differentiable recursion, imported on first use (it loads Numba: ~0.3 s)."""
    with warnings.catch_warnings():
        # torchlpc falls back to its Numba kernels when its C++ extension is absent; that is fine here.
        warnings.simplefilter("ignore")
        from torchcomp import compressor_core
    return compressor_core


def time_constant_coefficient(time_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """One-pole smoothing coefficient for a 63 % (1 - 1/e) time constant of ``time_ms``."""
    return 1.0 - torch.exp(-1000.0 / (time_ms * sample_rate))


def soft_knee(over_db: torch.Tensor, slope, knee_db) -> torch.Tensor:
    """The soft-knee static curve (Giannoulis et al., eq. 4) as a function of the level over the threshold.

    Gain in dB for ``over_db`` (level minus threshold): 0 below ``-knee/2``, ``slope *
    over`` above ``+knee/2``, and in between the quadratic ``slope (over + knee/2)^2 /
    (2 knee)`` that joins the two with a continuous slope.  A compressor has ``slope =
    1/ratio - 1``; knee 0 is a hard knee, exactly ``min(0, slope * over)`` for slope < 0.
    Parameters broadcast against ``over_db``.
    """
    knee = torch.as_tensor(knee_db, dtype=over_db.dtype, device=over_db.device)
    in_knee = slope * (over_db + knee / 2) ** 2 / (2 * knee.clamp_min(KNEE_FLOOR_DB))
    return torch.where(2 * over_db < -knee, torch.zeros_like(over_db), torch.where(2 * over_db > knee, slope * over_db, in_knee))


def smooth_gain_db(target_db: torch.Tensor, attack_ms: torch.Tensor, release_ms: torch.Tensor, sample_rate: float,
                   render: bool) -> torch.Tensor:
    """(batch, samples) target gain in dB (<= 0) -> the applied gain: going down with ``attack_ms``, back up with ``release_ms``.

    ``attack_ms`` / ``release_ms`` are (batch,); ``render`` picks the compiled loop (no gradient).
    """
    attack = time_constant_coefficient(attack_ms, sample_rate)
    release = time_constant_coefficient(release_ms, sample_rate)
    if render:
        return ballistics(target_db, attack, release)
    core = _compressor_core()
    instant, start = torch.ones_like(attack), torch.zeros_like(attack)
    held = core(target_db, start, instant, release)  # instant attack, exponential release
    return core(held, start, attack, instant)  # attack-only smoothing


def hold_db(target_db: torch.Tensor, release_ms: torch.Tensor, sample_rate: float, render: bool) -> torch.Tensor:
    """The first pass alone: follows drops of ``target_db`` at once, recovers with ``release_ms`` (63 %)."""
    release = time_constant_coefficient(release_ms, sample_rate)
    instant = torch.ones_like(release)
    if render:  # with attack coefficient 1 the second pass of the loop copies the first
        return ballistics(target_db, instant, release)
    return _compressor_core()(target_db, torch.zeros_like(release), instant, release)


def sliding_max(x: torch.Tensor, window: int, lookahead: bool = False) -> torch.Tensor:
    """Max of ``x`` (..., n) over the ``window`` samples ending at each sample (``lookahead``: starting at it).

    Samples outside the signal do not count (the window is cut at the edges).
    """
    if window <= 1:
        return x
    n = x.shape[-1]
    blocks = -(-(n + window - 1) // window)
    fill = torch.finfo(x.dtype).min
    if lookahead:  # y[t] = max x[t : t + window]
        padded = torch.nn.functional.pad(x, (0, blocks * window - n), value=fill)
    else:  # y[t] = max x[t - window + 1 : t + 1]
        padded = torch.nn.functional.pad(x, (window - 1, blocks * window - n - window + 1), value=fill)
    b = padded.reshape(*x.shape[:-1], blocks, window)
    prefix = b.cummax(dim=-1).values.reshape(padded.shape)
    suffix = b.flip(-1).cummax(dim=-1).values.flip(-1).reshape(padded.shape)
    # A window [s, s + window - 1] spans at most two blocks: the suffix of the first, the prefix of the second.
    m = padded.shape[-1] - window + 1
    out = torch.maximum(suffix[..., :m], prefix[..., window - 1:])
    return out[..., :n]


def moving_average(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean of ``x`` (..., n) over the ``window`` samples ending at each sample (zeros before the start).

    A running sum in float64 (exact enough over long files), differentiable.
    """
    if window <= 1:
        return x
    c = torch.nn.functional.pad(x.to(torch.float64).cumsum(-1), (window, 0))
    return ((c[..., window:] - c[..., :-window]) / window).to(x.dtype)


def db_to_gain(db: torch.Tensor) -> torch.Tensor:
    """10 ** (dB / 20)."""
    return torch.exp(db * (math.log(10) / 20))


def peak_db(x: torch.Tensor, floor_db: float = -120.0) -> torch.Tensor:
    """(batch, channels, samples) -> (batch, samples): the linked (loudest-channel) instantaneous peak level in dBFS."""
    return 20 * torch.log10(x.abs().amax(dim=1).clamp_min(10 ** (floor_db / 20)))
