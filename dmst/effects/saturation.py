"""Oversampled, level-compensated tanh saturation with asymmetry for even harmonics.

The waveshaper (:func:`curve`, the one place it is written) is ``tanh(g * x / c + b) - tanh(b)``: ``g`` the drive, ``c`` a soft
ceiling at +12 dBFS (so at 0 dB drive ordinary programme barely bends the curve)
and ``b`` a bias that makes the curve asymmetric, which adds even harmonics, the
"tube-like" colour.  Clipping leaves a DC that follows the envelope (a sub-sonic
thump, from the bias and from the asymmetric waveform of a voice itself); a
zero-phase 15 Hz high-pass on the wet signal removes it without shifting the phase
of the voice (-0.1 dB at 40 Hz).  The wet signal is then scaled to the dry signal's
RMS, so drive changes colour, not loudness.

Aliasing is kept down by running the curve at ``OVERSAMPLE`` x the sample rate
(band-limited sinc resampling, torchaudio's Kaiser-windowed resampler), the
classic approach (e.g. J. Pakarinen and D. T. Yeh, "A Review of Digital Techniques
for Modeling Vacuum-Tube Guitar Amplifiers", CMJ 33(2), 2009).
"""
from __future__ import annotations

import torch

from ._biquads import sosfiltfilt
from ._llvm import map_threads
from ._path import render_path
from .eq import BUTTERWORTH_Q, biquad, sosfilt_fft
from .resample import downsample, downsample_phases, phase_margins, upsample, upsample_phases

OVERSAMPLE = 2  # alias products stay >= 50 dB down even at full drive (tests/test_saturation.py)
CEILING = 10 ** (12 / 20)  # soft ceiling of the curve at 0 dB drive: +12 dBFS
MAX_BIAS = 0.6  # bias at asymmetry 1
# Kaiser-windowed sinc: ~100 dB stop band so images of the input do not become aliases.
_RESAMPLE = dict(lowpass_filter_width=16, rolloff=0.9, resampling_method="sinc_interp_kaiser", beta=14.769656459379492)
_PAD = 64  # samples of context per block at the base rate (> the resampler's half-length)
BLOCK_LENGTH = 2**18
COMPILED_BLOCK_LENGTH = 2**20  # the compiled path keeps only the phases of one block (8 MiB a channel)


def curve(x: torch.Tensor, gain, bias, in_place: bool = False) -> torch.Tensor:
    """The waveshaper, ``tanh(gain * x / CEILING + bias) - tanh(bias)``: the one place it is written.

    Zero at zero; ``bias`` makes it asymmetric.  ``gain`` and ``bias`` broadcast against ``x``.
    ``in_place=True`` overwrites ``x`` (rendering: no temporary the size of the oversampled
    signal); otherwise it is differentiable, with one temporary.
    """
    bias = torch.as_tensor(bias, dtype=x.dtype, device=x.device)
    y = x.mul_(gain) if in_place else x * gain
    y = y.div_(CEILING).add_(bias).tanh_()
    return y.sub_(torch.tanh(bias)) if in_place else y - torch.tanh(bias)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return upsample(x, OVERSAMPLE, **_RESAMPLE)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return downsample(x, OVERSAMPLE, **_RESAMPLE)


def _shape(x, gain, bias):
    """The oversampled curve with torch's resampling kernels (differentiable)."""
    return _downsample(curve(_upsample(x), gain, bias))


def _shape_compiled(x, gain, bias):
    """:func:`_shape` for rendering: the same kernels as compiled FIR loops (float32), and the curve applied
    to the up-sampled phases in place (:func:`dmst.effects.resample.upsample_phases`)."""
    batch, channels, n = x.shape
    front, back = phase_margins(OVERSAMPLE, n, **_RESAMPLE)
    phases = upsample_phases(x.reshape(-1, n), OVERSAMPLE, front, back, **_RESAMPLE)
    rows = phases.shape[0]
    gain, bias = (v.to(torch.float32).reshape(-1, 1, 1).expand(batch, channels, 1).reshape(rows, 1, 1) for v in (gain, bias))
    curve(phases[..., front: front + n], gain, bias, in_place=True)
    return downsample_phases(phases, n, OVERSAMPLE, **_RESAMPLE).reshape(batch, channels, n).to(x.dtype)


def waveshape(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, render: bool | None = None) -> torch.Tensor:
    """The oversampled curve alone (no DC removal or level compensation), in blocks for long inputs.

    ``render``: the compiled path (:func:`dmst.effects._path.render_path`, asked here when not given).
    """
    n = x.shape[-1]
    if render is None:
        render = render_path(x, gain, bias)
    shape_block, block_length = (_shape_compiled, COMPILED_BLOCK_LENGTH) if render else (_shape, BLOCK_LENGTH)
    if n <= block_length:
        return shape_block(x, gain, bias)
    # Rendering, the blocks go straight into one output buffer (no list + cat: half the memory).
    # (The broadcast shape by hand: torch.broadcast_shapes imports sympy, 0.5 s of every command-line render.)
    shape = tuple(max(sizes) for sizes in zip(x.shape, gain.shape, bias.shape))
    out = x.new_empty(shape) if render else None

    def block(start):
        lo, hi = max(0, start - _PAD), min(n, start + block_length + _PAD)
        y = shape_block(x[..., lo:hi], gain, bias)[..., start - lo: start - lo + min(block_length, n - start)]
        if out is None:
            return y
        out[..., start: start + y.shape[-1]] = y

    starts = list(range(0, n, block_length))
    if out is None:
        return torch.cat([block(start) for start in starts], dim=-1)
    # Rendering, the blocks run side by side on the kernels' pool: the curve's torch operations (most of the
    # time: tanh on the oversampled signal) then use every core too; each block writes its own part of ``out``.
    map_threads(block, starts)
    return out


DC_BLOCK_HZ = 15.0
DC_BLOCK_TAIL_SECONDS = 0.5  # the high-pass's response is below 1e-14 by then


def dc_block_sos(sample_rate: float, batch: int) -> torch.Tensor:
    """The wet signal's DC/rumble filter: an RBJ Butterworth high-pass at ``DC_BLOCK_HZ`` (applied zero-phase)."""
    return biquad("high_pass", DC_BLOCK_HZ, 0.0, BUTTERWORTH_Q, sample_rate).reshape(1, 1, 6).expand(batch, 1, 6)


def saturation(x: torch.Tensor, sample_rate: float, drive_db, asymmetry, mix) -> torch.Tensor:
    """Saturate ``x`` (batch, channels, samples); parameters are (batch,) tensors or floats.

    ``sample_rate`` sets the wet signal's DC-blocking filter; the curve itself is rate-independent.
    """
    batch = x.shape[0]

    def col(v):
        v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
        v = v.reshape(-1).expand(batch) if v.numel() == 1 else v.reshape(batch)
        return v[:, None, None]

    gain = 10 ** (col(drive_db) / 20)
    bias = MAX_BIAS * col(asymmetry)
    mix = col(mix)
    render = render_path(x, gain, bias, mix)
    wet = waveshape(x, gain, bias, render)
    dry_rms = x.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-12).sqrt()
    if not render:
        wet = sosfilt_fft(wet, dc_block_sos(sample_rate, batch), zero_phase=True)
        wet_rms = wet.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-12).sqrt()
        wet = wet * (dry_rms / wet_rms)
        return (1 - mix) * x + mix * wet
    # Rendering: the same zero-phase filter as a compiled forward-backward recursion (about 2x
    # faster on long files), then the same arithmetic in place: one temporary instead of five.
    wet = sosfiltfilt(wet, dc_block_sos(sample_rate, batch), int(DC_BLOCK_TAIL_SECONDS * sample_rate))
    wet_rms = wet.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-12).sqrt()
    wet *= dry_rms / wet_rms
    wet *= mix
    return wet.add_((1 - mix) * x)


def transfer_curve(x: torch.Tensor, drive_db: float, asymmetry: float, mix: float) -> torch.Tensor:
    """The static curve the effect applies to a level ``x`` (x full scale), scaled to unit slope at 0, then mixed with
    the dry signal: what ``dmst plot`` draws.  (The effect matches the wet signal's RMS to the dry one's, so only the
    curve's shape matters; its slope at 0 is found by autograd from :func:`curve` itself.)"""
    gain, bias = 10 ** (drive_db / 20), MAX_BIAS * asymmetry
    zero = torch.zeros(1, dtype=x.dtype, requires_grad=True)
    with torch.enable_grad():
        slope, = torch.autograd.grad(curve(zero, gain, bias), zero)
    with torch.no_grad():
        return (1 - mix) * x + mix * curve(x, gain, bias) / slope
