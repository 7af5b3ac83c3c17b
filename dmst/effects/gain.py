"""Gain and loudness: the console's measured input staging and its loudness-targeted output.

Loudness is ITU-R BS.1770-4 integrated loudness (K-weighting, 400 ms blocks with 75 %
overlap, absolute gate at -70 LUFS and relative gate at -10 LU).  Two measurements of
the same quantity: :func:`integrated_loudness` (recursive K-weighting, compiled, no
gradient: for rendering and metering) and :func:`integrated_loudness_differentiable`
(K-weighting by FFT, gates chosen without gradient: for training through the output stage).
"""
from __future__ import annotations

import math

import torch

from ._biquads import sosfilt
from ._path import render_path
from .eq import sosfilt_fft

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
    power = y.pow_(2).sum(dim=1) if y.shape[1] > 1 else y.pow_(2)[:, 0]
    del y
    if block == 4 * step:  # each block is 4 hops: sum the hops, then 4 neighbouring hop sums (in float64)
        # torch sums float32 pairwise: a hop's sum is within ~1e-7 of float64's (1e-6 LU), 20x faster here.
        hops = power[:, : n // step * step].reshape(power.shape[0], -1, step).sum(-1).double()
        z = hops.unfold(-1, 4, 1).sum(-1) / block  # (batch, blocks), channels summed
    else:  # rates where 400 ms is not 4 whole hops: a cumulative sum
        csum = torch.nn.functional.pad(power.double().cumsum(-1), (1, 0))
        starts = torch.arange(0, n - block + 1, step)
        z = (csum[:, starts + block] - csum[:, starts]) / block
    del power
    return gated_loudness(z).to(torch.float32)


def staging_gain_db(x: torch.Tensor, sample_rate: int, reference_lufs: float = REFERENCE_LUFS) -> torch.Tensor:
    """The gain (dB, per item) that brings each item's integrated loudness to ``reference_lufs``.

    Silent or near-silent items (below -70 LUFS) get 0 dB: there is nothing to stage.
    """
    lufs = integrated_loudness(x, sample_rate)
    g = reference_lufs - lufs
    return torch.where(lufs > MIN_LOUDNESS_LUFS, g, torch.zeros_like(g))


def block_loudness_power(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(batch, channels, samples) -> (batch, blocks): K-weighted mean square of 400 ms blocks, 75 % overlap.

    Channels are summed (weight 1, as in :func:`integrated_loudness`).  Differentiable:
    the K-weighting is applied by FFT (:func:`dmst.effects.eq.sosfilt_fft`).
    """
    sos = k_weighting_sos(sample_rate).to(x.dtype).to(x.device).expand(x.shape[0], -1, -1)
    y = sosfilt_fft(x, sos)
    block = int(round(BLOCK_SECONDS * sample_rate))
    if y.shape[-1] < block:  # a clip shorter than one block is one (zero-padded) block, as in integrated_loudness
        y = torch.nn.functional.pad(y, (0, block - y.shape[-1]))
    return torch.nn.functional.avg_pool1d(y.pow(2).sum(dim=1, keepdim=True), block, stride=int(round(block / 4)))[:, 0]


def gated_blocks(z: torch.Tensor) -> torch.Tensor:
    """(batch, blocks) block powers -> boolean mask of the blocks BS.1770 keeps (absolute, then relative gate)."""
    with torch.no_grad():
        level = -0.691 + 10 * torch.log10(z.clamp_min(1e-30))
        gated = level > MIN_LOUDNESS_LUFS
        absolute = (z * gated).sum(-1, keepdim=True) / gated.sum(-1, keepdim=True).clamp_min(1)
        return gated & (level > -0.691 + 10 * torch.log10(absolute.clamp_min(1e-30)) - 10.0)


def gated_loudness(z: torch.Tensor) -> torch.Tensor:
    """(batch, blocks) block powers -> (batch,) integrated loudness in LUFS over the gated blocks; -inf if none pass.

    Differentiable in ``z`` (the gates themselves are chosen without gradient).
    """
    keep = gated_blocks(z)
    count = keep.sum(-1)
    lufs = -0.691 + 10 * torch.log10(((z * keep).sum(-1) / count.clamp_min(1)).clamp_min(1e-30))
    return torch.where(count > 0, lufs, torch.full_like(lufs, float("-inf")))


def integrated_loudness_differentiable(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """BS.1770-4 integrated loudness (LUFS, per item) with a gradient; silence gives -inf.

    Which blocks pass the gates is decided without gradient (a step function has
    none); the loudness of the kept blocks is differentiable.  Equals
    :func:`integrated_loudness` to within float precision.
    """
    return gated_loudness(block_loudness_power(x, sample_rate))


def loudness_normalize(x: torch.Tensor, sample_rate: int, loudness_lufs, offset_lu=None) -> torch.Tensor:
    """Scale each item of (batch, channels, samples) ``x`` so its integrated loudness is ``loudness_lufs``.

    The console's output stage, as an engineer delivers a vocal to a loudness target:
    the render is measured (BS.1770-4) and one gain sets it on the target, so the
    result lands there whatever the EQ, compressor and saturation did to the level.
    ``offset_lu`` (per item, optional) is added to the target; training uses it when
    ``x`` is an excerpt of a longer song, since the song, not the excerpt, is what
    lands on the target.  Silent items are returned unchanged.  Off the render path
    (:func:`dmst.effects._path.render_path`: training, or a GPU) the measurement is differentiable, so the gradient sees that level changes
    before this stage are undone by it.
    """
    if render_path(x):  # the measurement needs a gradient only through x (the target's is direct)
        lufs = integrated_loudness(x, sample_rate).to(device=x.device, dtype=x.dtype)
    else:
        lufs = integrated_loudness_differentiable(x, sample_rate)
    target = torch.as_tensor(loudness_lufs, dtype=x.dtype, device=x.device).reshape(-1)
    if offset_lu is not None:
        target = target + torch.as_tensor(offset_lu, dtype=x.dtype, device=x.device).reshape(-1)
    finite = torch.isfinite(lufs)
    g = torch.where(finite, target - torch.where(finite, lufs, torch.zeros_like(lufs)), torch.zeros_like(lufs))
    return gain(x, g)
