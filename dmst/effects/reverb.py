"""Reverb send: a seeded filtered-noise impulse response with a frequency-dependent decay, returned in stereo.

A late-reverberation model in the manner of dasp-pytorch's
``noise_shaped_reverberation`` (after Steinmetz et al.) and of statistical room
acoustics (Polack's model: Gaussian noise under an exponential envelope): the impulse
response is noise split into ``BAND_CENTRES_HZ`` bands (complementary raised-cosine
masks on a log-frequency axis, so the bands sum to the noise), each band under the
envelope ``exp(-3 ln(10) t / T(f))``, whose energy falls 60 dB in ``T(f)``:

    T(f) = decay_s / (1 + (f / damping_hz) ** 2)

(set at the octave centres, 125 Hz to 16 kHz, and crossfaded between them), so
``decay_s`` is the RT60 at low and middle frequencies, and the decay is half as long
at ``damping_hz`` (air and wall absorption shorten the high-frequency decay).
The noise is fixed (seeded: :data:`SEED`), so renders repeat and training and
rendering use the same response.  Two noises make the stereo return; ``width`` mixes
them as mid/side, from 0 (both channels the same response) to 1 (two uncorrelated
responses).  The response is scaled to unit energy, so ``send_db`` is the return's
level against the send for a steady, noise-like input; at
:data:`dmst.effects._sends.SEND_OFF_DB` the return is exactly zero.  ``pre_delay_ms``
delays the whole return (a phase on the response's FFT: fractional, differentiable).
"""
from __future__ import annotations

import functools
import math

import torch

from ._path import per_item
from ._sends import convolve_mono, delay_phase, fast_length, send_gain

SEED = 20250101
BAND_CENTRES_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)
MAX_DECAY_S = 6.0
TAIL_DB = 80.0  # the response is kept until the slowest band has fallen this far (the render's tail rule too)
MAX_SECONDS = MAX_DECAY_S * TAIL_DB / 60.0
# Zeros after the response for the fractional pre-delay.  The response starts at full level, so
# the band-limited (sinc) delay rings before its onset, falling as 1 / (pi k) at k samples; on
# the FFT's circle that ringing lands at the buffer's end.  With this margin what wraps is
# below -100 dB re the onset, and the response is cut where it ends, before the wrapped part.
PRE_DELAY_MARGIN = 2**15
NYQUIST_FADE = 0.45  # the noise fades out from this fraction of the sample rate to Nyquist
DECAY = 3 * math.log(10)  # amplitude exp(-DECAY t / T): energy -60 dB at t = T


@functools.lru_cache(maxsize=4)
def noise_bands(sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bands (B, 2, N) float64, cross (B, B)): two seeded noises of ``MAX_SECONDS`` split into the bands, and the
    bands' mean cross-products (averaged over both noises; neighbouring bands overlap)."""
    n = fast_length(int(math.ceil(MAX_SECONDS * sample_rate)))
    noise = torch.randn(2, n, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    spectrum = torch.fft.rfft(noise)
    f = torch.fft.rfftfreq(n, 1 / sample_rate, dtype=torch.float64)
    octave = torch.log2(f.clamp_min(1e-3) / BAND_CENTRES_HZ[0])  # band b's centre at octave b
    masks = []
    for b in range(len(BAND_CENTRES_HZ)):
        # Raised-cosine crossfades between neighbouring centres: the masks sum to 1 at every frequency.
        rising = 0.5 - 0.5 * torch.cos(math.pi * (octave - (b - 1)).clamp(0, 1))
        falling = 0.5 + 0.5 * torch.cos(math.pi * (octave - b).clamp(0, 1))
        if b == 0:
            rising = torch.ones_like(octave)
        if b == len(BAND_CENTRES_HZ) - 1:
            falling = torch.ones_like(octave)
        masks.append(torch.where(octave < b, rising, falling))
    # No energy at Nyquist: a fractional pre-delay turns that bin's phase, which a real signal cannot
    # hold there; the cut leaves a steady Nyquist tone over the whole response (about -85 dB re
    # its start), above the late decay.  A raised-cosine fade from 0.45 fs, above hearing.
    top = 0.5 + 0.5 * torch.cos(math.pi * ((f / sample_rate - NYQUIST_FADE) / (0.5 - NYQUIST_FADE)).clamp(0, 1))
    bands = torch.fft.irfft(spectrum * (torch.stack(masks) * top)[:, None], n=n)  # (B, 2, n)
    flat = bands.reshape(len(masks), -1)
    return bands, flat @ flat.T / (2 * n)


def band_decays(decay_s: torch.Tensor, damping_hz: torch.Tensor) -> torch.Tensor:
    """(batch, B) RT60 of each band, seconds."""
    f = torch.tensor(BAND_CENTRES_HZ, dtype=decay_s.dtype, device=decay_s.device)
    return decay_s[:, None] / (1 + (f / damping_hz[:, None]) ** 2)


def reverb_response(n: int, sample_rate: int, decay_s, damping_hz, width, pre_delay_ms=None,
                    dtype=torch.float32) -> torch.Tensor:
    """Impulse responses (batch, 2, L) of unit energy (the full, untruncated response's), level excluded.

    ``L`` is at most ``n`` (what the output can hear) and at most where the slowest band has fallen ``TAIL_DB``
    (plus the pre-delay).  The pre-delay (fractional) is a phase on the response's own FFT grid.
    """
    bands, cross = noise_bands(int(sample_rate))
    device = decay_s.device
    cross = cross.to(device)
    decays = band_decays(decay_s.to(torch.float64), damping_hz.to(torch.float64))  # (batch, B)
    length = min(n, bands.shape[-1], int(math.ceil(float(decays.detach().max()) * TAIL_DB / 60.0 * sample_rate)))
    t = torch.arange(length, dtype=torch.float64, device=device) / sample_rate
    envelope = torch.exp(-DECAY * t / decays[..., None])  # (batch, B, L)
    # Energy of the whole response (a geometric series per pair of bands), so the level does not depend on n.
    rate = DECAY / (decays * sample_rate)  # (batch, B)
    energy = (cross / (1 - torch.exp(-(rate[:, :, None] + rate[:, None, :])))).sum(dim=(1, 2))  # (batch,)
    h = torch.einsum("bkt,kct->bct", envelope.to(dtype), bands[..., :length].to(device, dtype))
    h = h / energy.sqrt().to(dtype)[:, None, None]
    angle = (width * (math.pi / 4)).to(dtype)[:, None]
    mid, side = h[:, 0] * torch.cos(angle), h[:, 1] * torch.sin(angle)
    h = torch.stack([mid + side, mid - side], dim=1)
    if pre_delay_ms is None:
        return h
    shift = pre_delay_ms.to(torch.float64) * sample_rate / 1000
    # Room for the shift and for the fractional delay's sinc to fade before it wraps around.
    n_fft = fast_length(length + int(math.ceil(float(shift.detach().max()))) + PRE_DELAY_MARGIN)
    spectrum = torch.fft.rfft(h, n=n_fft) * delay_phase(shift, n_fft, torch.complex128 if dtype == torch.float64
                                                            else torch.complex64)[:, None]
    end = length + int(math.ceil(float(shift.detach().max()))) + 1  # the delayed response's last sample
    return torch.fft.irfft(spectrum, n=n_fft)[..., : min(n, end)]


def reverb(x: torch.Tensor, sample_rate: int, decay_s, pre_delay_ms, damping_hz, width, send_db) -> torch.Tensor:
    """The reverb return for (batch, channels, n) ``x``: (batch, 2, n); parameters floats or (batch,) tensors."""
    batch, _, n = x.shape
    decay_s, pre_delay_ms, damping_hz, width, send_db = (
        per_item(v, batch, x) for v in (decay_s, pre_delay_ms, damping_hz, width, send_db))
    level = send_gain(send_db)
    if not bool((level != 0).any()):
        return x.new_zeros(batch, 2, n)
    h = reverb_response(n, sample_rate, decay_s, damping_hz, width, pre_delay_ms, x.dtype)
    return convolve_mono(x, h) * level[:, None, None]
