"""What the encoder hears: a log-mel spectrogram of the gain-staged vocal, level statistics and band shares.

The console stages every input to the same loudness before its effects, so the
encoder sees the same staged signal: absolute dB values in the spectrogram are then
meaningful, and the level statistics (peak, RMS, crest factor, spread of the short-term
level) tell it where a compressor threshold will bite.  The band shares are the take's
long-term average spectrum (what an engineer reads off an analyser before reaching for the
EQ): the CNN's features are averaged over frequency, so without them the head sees the
tonal balance only through its channels.
"""
from __future__ import annotations

import torch

from .._torchaudio import mel_spectrogram

SAMPLE_RATE = 44100
SEGMENT_SECONDS = 5.0
MAX_SEGMENTS = 12  # at most 60 s of a long file are analysed
N_MELS = 64
N_LEVEL_FEATURES = 6
N_BANDS = 16  # band shares: the 64 mel bands summed 4 by 4
_ENVELOPE_SECONDS = 0.05
_ACTIVE_DB = -60.0


class LogMel(torch.nn.Module):
    """(batch, samples) at 44.1 kHz -> (batch, 1, N_MELS, frames), dB scaled to about unit range."""

    def __init__(self):
        super().__init__()
        self.mel = mel_spectrogram(
            sample_rate=SAMPLE_RATE, n_fft=2048, hop_length=1024, n_mels=N_MELS, f_min=30.0, f_max=20000.0, power=2.0
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        db = 10 * torch.log10(self.mel(x) + 1e-10)
        return ((db + 40.0) / 20.0).unsqueeze(1)


def level_features(x: torch.Tensor) -> torch.Tensor:
    """(batch, samples) staged mono -> (batch, 6): peak, RMS, crest, p10/p50/p90 of the 50 ms level, all dB / 20."""
    hop = int(_ENVELOPE_SECONDS * SAMPLE_RATE)
    peak_db = 20 * torch.log10(x.abs().amax(dim=-1).clamp_min(1e-6))
    rms_db = 10 * torch.log10(x.pow(2).mean(dim=-1).clamp_min(1e-12))
    n = (x.shape[-1] // hop) * hop
    if n == 0:
        env_db = rms_db[:, None]
    else:
        env_db = 10 * torch.log10(x[:, :n].reshape(x.shape[0], -1, hop).pow(2).mean(-1).clamp_min(1e-12))
    # percentiles over active frames only (pauses would otherwise dominate); fall back to all frames
    active = env_db > _ACTIVE_DB
    env_active = torch.where(active, env_db, torch.full_like(env_db, float("nan")))
    q = torch.tensor([0.1, 0.5, 0.9], dtype=x.dtype, device=x.device)
    pct = torch.nanquantile(env_active, q, dim=-1).T
    pct = torch.where(torch.isnan(pct), rms_db[:, None].expand_as(pct), pct)
    feats = torch.stack([peak_db, rms_db, peak_db - rms_db, pct[:, 0], pct[:, 1], pct[:, 2]], dim=-1)
    return feats / 20.0


def band_shares(mel: torch.Tensor) -> torch.Tensor:
    """(batch, 1, N_MELS, frames) LogMel output -> (batch, N_BANDS): each band's share of the power, dB / 20.

    The long-term average spectrum: the mel power averaged over the frames (so pauses weigh little), summed
    into N_BANDS bands of 4 mel bands each, each as 10 log10(band / total).  A silent input reads equal shares.
    """
    power = 10.0 ** ((mel[:, 0] * 20.0 - 40.0) / 10.0)  # LogMel's scaling undone
    band = power.mean(dim=-1).reshape(mel.shape[0], N_BANDS, -1).sum(dim=-1)
    share = band / band.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return 10.0 * torch.log10(share.clamp_min(1e-20)) / 20.0


def choose_segments(x: torch.Tensor) -> torch.Tensor:
    """Bounded, representative excerpt of a long (samples,) staged mono signal -> (segments, segment_samples).

    The file is cut into 5 s segments; near-silent ones are dropped and at most
    MAX_SEGMENTS are kept, evenly spaced over the file (so verses and choruses are
    both heard), which bounds inference time for any file length.
    """
    seg = int(SEGMENT_SECONDS * SAMPLE_RATE)
    if x.shape[-1] <= seg:
        return x[None]
    n = x.shape[-1] // seg
    segs = x[: n * seg].reshape(n, seg)
    rms_db = 10 * torch.log10(segs.pow(2).mean(-1).clamp_min(1e-12))
    keep = segs[rms_db > rms_db.max() - 30.0]
    if keep.shape[0] > MAX_SEGMENTS:
        idx = torch.linspace(0, keep.shape[0] - 1, MAX_SEGMENTS).round().long()
        keep = keep[idx]
    return keep
