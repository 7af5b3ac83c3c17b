"""Gain and loudness: output gain and the console's measured input gain staging.

Loudness is ITU-R BS.1770-4 integrated loudness (K-weighting, 400 ms blocks with 75 %
overlap, absolute gate at -70 LUFS and relative gate at -10 LU).
"""
from __future__ import annotations

import math

import torch

from ._biquads import sosfilt

REFERENCE_LUFS = -18.0  # the level every raw vocal is staged to before the effects
MIN_LOUDNESS_LUFS = -70.0  # BS.1770 absolute gate: quieter than this counts as silence
BLOCK_SECONDS = 0.4


def gain(x: torch.Tensor, gain_db) -> torch.Tensor:
    """Multiply (batch, channels, samples) ``x`` by ``gain_db`` (float or (batch,) tensor)."""
    g = torch.as_tensor(gain_db, dtype=x.dtype, device=x.device).reshape(-1)
    return x * (10 ** (g / 20)).reshape(-1, 1, 1)


def k_weighting_sos(sample_rate: float) -> torch.Tensor:
    """BS.1770 K-weighting (pre-filter shelf + RLB high-pass) as a (1, 2, 6) SOS cascade at any rate.

    Re-derived for any rate from the analogue prototype of the standard's 48 kHz filters
    (as libebur128 does); at 48 kHz it reproduces the coefficients published in BS.1770.
    """
    # Stage 1: high shelf, about +4 dB above 1.7 kHz (the head's acoustic effect).
    G, Q, fc = 3.999843853973347, 0.7071752369554196, 1681.974450955533
    K = math.tan(math.pi * fc / sample_rate)
    Vh = 10 ** (G / 20)
    Vb = Vh**0.4996667741545416
    a0 = 1 + K / Q + K * K
    shelf = [(Vh + Vb * K / Q + K * K) / a0, 2 * (K * K - Vh) / a0, (Vh - Vb * K / Q + K * K) / a0,
             1.0, 2 * (K * K - 1) / a0, (1 - K / Q + K * K) / a0]
    # Stage 2: the RLB high-pass near 38 Hz.
    Q, fc = 0.5003270373238773, 38.13547087602444
    K = math.tan(math.pi * fc / sample_rate)
    a0 = 1 + K / Q + K * K
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (K * K - 1) / a0, (1 - K / Q + K * K) / a0]
    return torch.tensor([[shelf, highpass]], dtype=torch.float64)


def integrated_loudness(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """BS.1770-4 integrated loudness of each item of (batch, channels, samples), in LUFS.

    All channels are weighted 1 (mono and L/R).  Clips shorter than one 400 ms block
    are zero-padded to one block (the K-weighted power of what is there).  Silence
    gives -inf.  K-weighting runs as the standard's recursive filters, compiled
    (:mod:`._biquads`, float64 state, as ``scipy.signal.sosfilt``).
    """
    x = x.detach().to(torch.float32)
    block = int(round(BLOCK_SECONDS * sample_rate))
    if x.shape[-1] < block:
        x = torch.nn.functional.pad(x, (0, block - x.shape[-1]))
    y = sosfilt(x, k_weighting_sos(sample_rate))
    n = y.shape[-1]
    # Mean square of 400 ms blocks with 75 % overlap (squared in place: no extra signal-sized copies).
    step = int(round(block / 4))
    power = y.pow_(2).sum(dim=1, dtype=torch.float64) if y.shape[1] > 1 else y.pow_(2)[:, 0]
    del y
    if block == 4 * step:  # each block is 4 hops: sum the hops (in float64), then 4 neighbouring hop sums
        hops = power[:, : n // step * step].reshape(power.shape[0], -1, step).sum(-1, dtype=torch.float64)
        z = hops.unfold(-1, 4, 1).sum(-1) / block  # (batch, blocks), channels summed
    else:  # rates where 400 ms is not 4 whole hops: a cumulative sum
        csum = torch.nn.functional.pad(power.double().cumsum(-1), (1, 0))
        starts = torch.arange(0, n - block + 1, step)
        z = (csum[:, starts + block] - csum[:, starts]) / block
    del power
    loud = -0.691 + 10 * torch.log10(z.clamp_min(1e-30))
    out = []
    for zi, li in zip(z, loud):
        gated = li > MIN_LOUDNESS_LUFS
        if not gated.any():
            out.append(torch.tensor(float("-inf"), dtype=torch.float64))
            continue
        relative = -0.691 + 10 * torch.log10(zi[gated].mean()) - 10.0
        keep = gated & (li > relative)
        out.append(-0.691 + 10 * torch.log10(zi[keep].mean()))
    return torch.stack(out).to(torch.float32)


def staging_gain_db(x: torch.Tensor, sample_rate: int, reference_lufs: float = REFERENCE_LUFS) -> torch.Tensor:
    """The gain (dB, per item) that brings each item's integrated loudness to ``reference_lufs``.

    Silent or near-silent items (below -70 LUFS) get 0 dB: there is nothing to stage.
    """
    lufs = integrated_loudness(x, sample_rate)
    g = reference_lufs - lufs
    return torch.where(lufs > MIN_LOUDNESS_LUFS, g, torch.zeros_like(g))
