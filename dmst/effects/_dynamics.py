"""Pieces shared by the v3 dynamics effects (de-esser, gate, limiter): gain ballistics and sliding windows.

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

import torch

from ._ballistics import ballistics
from .compressor import _compressor_core, time_constant_coefficient


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
