"""Training data: (raw, mixed) vocal pairs on disk, checked, aligned and cached.

Layout::

    DATA/raw/NAME.wav      the unprocessed vocal
    DATA/mixed/NAME.flac   the engineer's mix of that same take

Files are matched by stem (``NAME``); the extensions may differ (anything soundfile
reads: wav, flac, aiff/aif, ogg, mp3, ...).  Any sample rate is resampled to the
training rate; channels are kept as delivered (a mono raw and a stereo mix is fine).

:func:`find_pairs` matches names; :func:`check_pairs` reads every pair once and
decides, with a reason for each, which pairs are fit to train on: unreadable, too
short or silent files are skipped, and so is a mix that does not correlate with its
raw (wrong file, different take), so nothing is ever silently trained on against an
unrelated target.  The mix's time offset against the raw is measured by
cross-correlation and removed, since the loss compares the two sample by sample.  A
mix that runs past its raw's end (a reverb or delay tail) is kept whole: the raw is
padded with silence.

With a ``cache_dir``, each checked pair is written there once, aligned and resampled,
as a 24-bit ``.npy`` file of (samples, raw channels + mix channels) (packed, 3 bytes a
sample, scaled to each side's peak), with its statistics in a ``.json`` beside it.
(float16 would save a third, but its quantisation noise, 66 dB under each sample,
moves the MR-STFT loss by 0.12 on a real mix: more than a 0.1 dB gain change does;
24-bit moves it by 1e-4.)  Training reads its crops from those files by
memory-mapping only the window it needs, so the training process holds no whole
song and its memory does not grow with the catalogue.  Entries are keyed by the
content of both files (BLAKE2b of their bytes) and the settings that shape them
(rate, alignment parameters, :data:`CACHE_VERSION`): a second run, a resumed one, or
a fine-tune on a few more mixes decodes and aligns only what it has not seen.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import random
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from . import _torchaudio
from .effects._sends import fast_length
from .effects.gain import MIN_LOUDNESS_LUFS, integrated_loudness, staging_gain_db

DEFAULT_SAMPLE_RATE = 44100
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".mp3", ".caf", ".w64", ".rf64"}
)

MIN_DURATION_S = 0.5  # shorter files carry too little to train on (and to align reliably)
SILENT_PEAK = 1e-4  # -80 dBFS
# A mix ending this much (or this fraction) before its raw gets a warning; so does a
# tail longer than TAIL_WARN_S (reverb and delay tails run a few seconds, not more).
DURATION_RATIO_WARN = 1.2
DURATION_DIFF_WARN_S = 1.0
TAIL_WARN_S = 10.0

# Alignment.  The offset is searched on whitened, band-limited mono downmixes,
# decimated by an integer factor to 16-32 kHz (22.05 kHz for 44.1 kHz audio).
# Whitening (dividing each spectrum by its own 1/3-octave-smoothed magnitude)
# removes the long-term spectral shape, so the mix's EQ cannot tilt or bias the
# correlation peak; the band keeps out rumble, hiss and the top octave where
# saturation adds harmonics the raw does not have.
ANALYSIS_RATE = 16000
ANALYSIS_BAND_HZ = (100.0, 6000.0)
# Normalised correlation (cosine similarity of the whitened signals at the found
# lag) below which a mix is taken not to be a mix of its raw.  Measured on the
# bundled voices: a different voice or song, or another part of the same song,
# peaks at 0.01-0.03 over a +-0.5 s search; the same take through the house or
# other style gives 0.88-0.94, through extreme settings (HPF 200 Hz, +10 dB
# presence, LPF 6 kHz, 10:1 at -35 dB, 15 dB full-mix drive) 0.71-0.74, and that
# again with an equal-level 1.5 s reverb 0.50-0.54.  0.3 sits a factor ~10 above
# the unrelated case and well below every real mix; 0.3-0.5 passes with a
# "weak correlation" warning.
MIN_CORRELATION = 0.3
WEAK_CORRELATION = 0.5

# Bump when anything that shapes a cache entry changes (checks, alignment, storage).
CACHE_VERSION = 1
CACHE_BITS = 24  # see the module docstring (and tests/test_data.py) for why not float16
_FULL_SCALE = 2 ** (CACHE_BITS - 1) - 1
DUAL_MONO_DB = 10 * math.log10(2.0)  # a mono signal on two identical channels measures this much louder (BS.1770)


class DataError(ValueError):
    """A training-data folder that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Pair:
    """A raw file and its mix, matched by file stem."""

    name: str
    raw_path: Path
    mixed_path: Path


@dataclass
class AlignedPair:
    """A checked pair ready for training: raw and mix aligned, ``num_samples`` long, at ``sample_rate``.

    The audio is either in memory (``audio``) or in a cache file read window by window
    (``cache_path``): (samples, raw channels + mix channels).  Everything training needs
    about the whole song is measured once, when the pair is checked.
    """

    name: str
    sample_rate: int
    num_samples: int
    raw_channels: int
    mixed_channels: int
    offset_ms: float  # > 0: the mix started later than the raw (that much was cut from its start)
    staging_db: float  # console input gain, measured on the whole raw file (staging_gain_db)
    correlation: float  # normalised correlation of the aligned, whitened mono downmixes
    mixed_lufs: float  # BS.1770 integrated loudness of the whole mix as delivered (channel powers summed)
    mixed_mono_lufs: float  # ... of its mean downmix (what a mono-layout model is compared with)
    tail_s: float = 0.0  # how far the mix runs past the raw's end (the raw is padded with silence there)
    key: str = ""  # cache key (content of both files + settings)
    cache_path: Path | None = None
    cache_scales: tuple[float, float] = (1.0, 1.0)  # raw and mix: value of one step of the stored integers
    audio: torch.Tensor | None = field(default=None, repr=False)  # (raw + mix channels, n) float32, if not cached

    @classmethod
    def from_audio(cls, name: str, raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, offset_ms: float = 0.0,
                   staging_db: float | None = None, correlation: float = 1.0, tail_s: float = 0.0) -> "AlignedPair":
        """An in-memory pair from aligned (channels, n) tensors of the same length; measures what is not given."""
        raw, mixed = torch.as_tensor(raw, dtype=torch.float32), torch.as_tensor(mixed, dtype=torch.float32)
        if staging_db is None:
            staging_db = float(staging_gain_db(raw[None], sample_rate)[0])
        lufs, mono_lufs = _mix_loudness(mixed, sample_rate)
        return cls(name, int(sample_rate), int(raw.shape[-1]), int(raw.shape[0]), int(mixed.shape[0]), float(offset_ms),
                   float(staging_db), float(correlation), lufs, mono_lufs, float(tail_s),
                   audio=torch.cat([raw, mixed]).contiguous())

    def window(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, mixed) samples ``start .. start + length`` (clipped to the pair), each (channels, n) float32.

        From the cache, only that window is mapped and read; the mapping is closed
        again, so reading crops leaves nothing of the song in the process's memory.
        """
        stop = min(start + length, self.num_samples)
        if self.audio is not None:
            both = self.audio[:, start:stop]
        else:
            frames = np.load(self.cache_path, mmap_mode="r")
            both = torch.from_numpy(_unpack24(frames[start:stop], self.raw_channels, self.cache_scales).T.copy())
            del frames  # unmaps the file
        return both[: self.raw_channels], both[self.raw_channels:]

    @property
    def raw(self) -> torch.Tensor:
        return self.window(0, self.num_samples)[0]

    @property
    def mixed(self) -> torch.Tensor:
        return self.window(0, self.num_samples)[1]

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def mix_layout_gain_db(self, channels: int) -> float:
        """Gain that keeps the mix's delivered loudness when :func:`to_layout` brings it to ``channels``."""
        if channels == self.mixed_channels:
            return 0.0
        if channels == 2:  # mono copied to both channels measures 3 dB louder
            return -DUAL_MONO_DB
        return self.mixed_lufs - self.mixed_mono_lufs if math.isfinite(self.mixed_mono_lufs) else 0.0


@dataclass
class PairResult:
    """What :func:`check_pairs` found for one pair."""

    name: str
    status: str  # "ok" or "skipped"
    reason: str = ""  # why it was skipped
    offset_ms: float | None = None
    correlation: float | None = None
    tail_s: float | None = None  # how far the mix runs past the raw's end, once aligned
    warnings: list[str] = field(default_factory=list)
    cached: bool = False  # found in the cache: nothing was decoded


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class CheckReport:
    """Result of :func:`check_pairs`: usable aligned pairs, skipped pairs with reasons, warnings."""

    usable: list[AlignedPair] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # "NAME: text"
    results: list[PairResult] = field(default_factory=list)  # one per checked pair, in order
    sample_rate: int = DEFAULT_SAMPLE_RATE  # the rate the usable pairs are at

    def tails_line(self) -> str | None:
        """One line on the tails: how many mixes run past their raw, and by how much."""
        tails = sorted(((r.tail_s, r.name) for r in self.results if r.status == "ok" and (r.tail_s or 0) > 0.05),
                       reverse=True)
        if not tails:
            return None
        median = tails[len(tails) // 2][0]
        return (f"tails: {len(tails)} mix{'es' if len(tails) != 1 else ''} run past the raw's end "
                f"(longest {tails[0][0]:.2f} s, {tails[0][1]}; median {median:.2f} s), kept whole: the raw is padded with silence")

    def format(self) -> str:
        """A short human-readable report: one line per problem, the tails, then "N pairs usable, M skipped"."""
        lines = [f"skipped {s.name}: {s.reason}" for s in self.skipped]
        lines += [f"warning {w}" for w in self.warnings]
        tails = self.tails_line()
        if tails:
            lines.append(tails)
        n, m = len(self.usable), len(self.skipped)
        cached = sum(r.cached for r in self.results)
        lines.append(f"{n} pair{'s' if n != 1 else ''} usable, {m} skipped" + (f" ({cached} from the cache)" if cached else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# finding pairs
# ---------------------------------------------------------------------------

def _audio_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        if p.stem in files:
            raise DataError(
                f"{folder} has two files named '{p.stem}' ({files[p.stem].name}, {p.name}); keep only one of them"
            )
        files[p.stem] = p
    return files


def find_pairs(data_dir) -> tuple[list[Pair], list[str], list[str]]:
    """Match ``data_dir/raw/*`` with ``data_dir/mixed/*`` by file stem.

    Returns ``(pairs, unmatched_raw, unmatched_mixed)``, each sorted by name.  Raises
    :class:`DataError` when the folder or its raw/ or mixed/ sub-folder is missing or
    holds no audio files, or when no name is found in both.
    """
    root = Path(data_dir)
    kinds = "wav, flac, aiff, ogg"
    if not root.is_dir():
        raise DataError(f"data folder '{root}' does not exist; pass the folder that holds raw/ and mixed/")
    for sub, what in (("raw", "the unprocessed vocals"), ("mixed", "the engineer's mixes, named like their raw files")):
        if not (root / sub).is_dir():
            raise DataError(f"'{root}' has no {sub}/ folder; put {what} in {root / sub}/")
    raw, mixed = _audio_files(root / "raw"), _audio_files(root / "mixed")
    for sub, files in (("raw", raw), ("mixed", mixed)):
        if not files:
            raise DataError(f"{root / sub}/ holds no audio files ({kinds}); add them there")
    names = sorted(raw.keys() & mixed.keys())
    unmatched_raw = sorted(raw.keys() - mixed.keys())
    unmatched_mixed = sorted(mixed.keys() - raw.keys())
    if not names:
        raise DataError(
            f"no file in {root / 'raw'}/ has a mix of the same name in {root / 'mixed'}/ "
            f"(e.g. raw/{raw[unmatched_raw[0]].name} has no mixed/{unmatched_raw[0]}.*); "
            "name each mix like its raw file"
        )
    pairs = [Pair(n, raw[n], mixed[n]) for n in names]
    return pairs, unmatched_raw, unmatched_mixed


def song_of(name: str, separator: str = "__") -> str:
    """The song a pair belongs to: its name up to the first ``separator`` (``verse1__take2`` -> ``verse1``).

    Takes of one song named ``SONG__TAKE`` then stay on one side of the validation split.
    """
    return name.split(separator, 1)[0] if separator else name


def training_rate(pairs: Sequence[Pair]) -> int:
    """The rate to train at: 48 kHz when most mixes are at a multiple of 48 kHz, else 44.1 kHz (headers only)."""
    votes = 0
    for p in pairs:
        try:
            rate = sf.info(str(p.mixed_path)).samplerate
        except Exception:  # unreadable: check_pairs reports it
            continue
        votes += 1 if rate % 48000 == 0 else -1
    return 48000 if votes > 0 else DEFAULT_SAMPLE_RATE


# ---------------------------------------------------------------------------
# audio helpers
# ---------------------------------------------------------------------------

def _decode(source, name: str) -> tuple[np.ndarray, int]:
    try:
        data, file_rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = re.sub(r"^Error opening ('.*?'|<.*?>): ", "", msg).rstrip(".")  # drop "Error opening '<path>': "
        raise DataError(f"cannot read {name} ({msg}); re-export it as WAV or FLAC") from None
    return data, int(file_rate)


def resample(x: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Band-limited resampling of (..., n) audio (torchaudio's windowed sinc, through dmst._torchaudio)."""
    if int(orig_sr) == int(new_sr) or x.shape[-1] == 0:
        return x
    return _torchaudio.resample(x, int(orig_sr), int(new_sr))


def load_audio(path, sample_rate: int = DEFAULT_SAMPLE_RATE, data: bytes | None = None) -> tuple[torch.Tensor, int]:
    """Read a file as float32 (channels, n), resampled to ``sample_rate``; also returns the file's own rate.

    ``data``: the file's bytes, when already read (decoded from memory instead).
    Raises :class:`DataError` (one line) for a file soundfile cannot read.
    """
    samples, file_rate = _decode(io.BytesIO(data) if data is not None else str(path), Path(path).name)
    x = torch.from_numpy(np.ascontiguousarray(samples.T))
    return resample(x, file_rate, sample_rate), file_rate


def to_layout(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(channels, n) or (batch, channels, n) audio in ``channels`` channels (1 or 2).

    Mono to stereo copies the channel (a centred image); anything else to mono, or
    more than two channels to stereo, takes the mean of the channels.
    """
    dim = x.dim() - 2
    have = x.shape[dim]
    if have == channels:
        return x
    mono = x if have == 1 else x.mean(dim=dim, keepdim=True)
    if channels == 1:
        return mono
    return mono.expand(*mono.shape[:dim], channels, mono.shape[-1]).contiguous()


def _mix_loudness(mixed: torch.Tensor, sample_rate: int) -> tuple[float, float]:
    """(loudness as delivered, loudness of the mean downmix) of a (channels, n) mix, LUFS."""
    lufs = float(integrated_loudness(mixed[None], sample_rate)[0])
    mono = lufs if mixed.shape[0] == 1 else float(integrated_loudness(mixed.mean(0, keepdim=True)[None], sample_rate)[0])
    return lufs, mono


def to_mono(x: torch.Tensor) -> torch.Tensor:
    """Mono downmix (mean of the channels) of (channels, n) audio, as (1, n)."""
    x = torch.as_tensor(x)
    if x.dim() == 1:
        return x.unsqueeze(0)
    return x.mean(dim=0, keepdim=True)


# Bins per block where the alignment's spectra are processed piecewise: a 3.5-minute take's spectrum has 2.3 M
# bins, and every full-length float64 temporary of it is 19 MB (a pair-checking worker's peak is made of them).
_BLOCK_BINS = 1 << 18


def _smoothed_magnitude(mag: torch.Tensor, fraction: float = 1 / 3) -> torch.Tensor:
    """Moving average of a magnitude spectrum over a constant-Q window ``fraction`` of an octave wide."""
    bins = mag.shape[-1]
    c = 2.0 ** (fraction / 2)
    cs = torch.zeros(*mag.shape[:-1], bins + 1, dtype=torch.float64)
    torch.cumsum(mag, dim=-1, dtype=torch.float64, out=cs[..., 1:])
    out = torch.empty_like(mag)
    for a in range(0, bins, _BLOCK_BINS):  # the windows' bounds block by block: the same values, no full-length indices
        k = torch.arange(a, min(bins, a + _BLOCK_BINS), dtype=torch.float64)
        lo = torch.clamp(torch.floor(k / c) - 1, min=0).long()
        hi = torch.clamp(torch.ceil(k * c) + 1, max=bins - 1).long()
        out[..., a:a + k.shape[0]] = ((cs[..., hi + 1] - cs[..., lo]) / (hi + 1 - lo)).to(mag.dtype)
    return out


@functools.lru_cache(maxsize=4)  # raw and mix share one per length; a catalogue has a few lengths at a time
def _band_weight(nfft: int, rate: float, band: tuple[float, float]) -> torch.Tensor:
    """Raised-cosine band-pass weight on the rfft grid: 1 inside ``band``, 0 below half its low
    edge and above 4/3 of its high edge."""
    bins = nfft // 2 + 1
    lo, hi = band
    w = torch.empty(bins, dtype=torch.float32)
    for a in range(0, bins, _BLOCK_BINS):  # piecewise, on torch.fft.rfftfreq's (float32) grid: the same values
        f = torch.arange(a, min(bins, a + _BLOCK_BINS), dtype=torch.float32).mul_(1.0 / (nfft * (1.0 / rate))).double()
        t_lo = torch.clamp(torch.log2(f.clamp_min(1e-9) / (lo / 2)), 0, 1)  # 0 at lo/2 -> 1 at lo
        t_hi = torch.clamp(torch.log2(torch.full_like(f, hi * 4 / 3) / f.clamp_min(1e-9)) / math.log2(4 / 3), 0, 1)
        w[a:a + f.shape[0]] = 0.5 * (1 - torch.cos(math.pi * t_lo)) * 0.5 * (1 - torch.cos(math.pi * t_hi))
    return w


def _fast_length(n: int) -> int:
    """Smallest even 2^a 3^b 5^c >= n (a length the FFT handles fast): twice the 5-smooth length of n / 2."""
    return 2 * fast_length((n + 1) // 2)


def _whiten(x: torch.Tensor, nfft: int, rate: int) -> torch.Tensor:
    """Spectrum of 1-D ``x`` divided by its own smoothed magnitude, band-limited (rfft of length nfft)."""
    spec = torch.fft.rfft(x, n=nfft)
    mag = spec.abs()
    floor = mag.mean() * 1e-3 + 1e-20
    smooth = _smoothed_magnitude(mag)
    del mag
    return spec.div_(smooth.add_(floor)).mul_(_band_weight(nfft, rate, ANALYSIS_BAND_HZ))


def estimate_offset(
    raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, max_offset_s: float = 0.5
) -> tuple[float, float]:
    """Time offset (ms) of ``mixed`` relative to ``raw`` and its normalised correlation.

    Both are (channels, n) or 1-D at ``sample_rate``; their mono downmixes are
    decimated by an integer factor (to 22.05 kHz for 44.1 kHz audio), whitened and
    band-limited (see the module constants), and cross-correlated by FFT over
    +-``max_offset_s``.  The peak of ``|correlation|`` is refined by parabolic
    interpolation (sub-sample accuracy).  A positive offset means the mix starts
    later: ``mixed[t + offset] ~ raw[t]``.

    The returned correlation is the cosine similarity of the whitened signals over
    their overlap at the found lag: ~1 for the same take through any EQ, lower with
    compression, saturation and reverb, near 0 for an unrelated recording.  It is
    negative when the mix's polarity is inverted.
    """
    r = to_mono(raw)[0].to(torch.float32)
    m = to_mono(mixed)[0].to(torch.float32)
    # Decimate by an integer factor to 16-32 kHz (cheap, exact-ratio resampling).
    q = max(1, int(sample_rate) // ANALYSIS_RATE)
    rate = int(sample_rate) / q
    if q > 1:
        r, m = resample(r, q, 1), resample(m, q, 1)
    n_r, n_m = r.shape[-1], m.shape[-1]
    max_lag = max(1, int(round(max_offset_s * rate)))
    # Long enough that no lag within +-max_lag wraps around (the circular correlation equals the linear one
    # there), not the n_r + n_m a full linear correlation needs: half the FFT work for a long take.
    nfft = _fast_length(max(n_r, n_m) + max_lag + 1)
    R, M = _whiten(r, nfft, rate), _whiten(m, nfft, rate)
    cross = M * torch.conj(R)
    cc = torch.fft.irfft(cross, n=nfft)
    # cc[k] = sum_t mw[t + k] rw[t]; negative lags wrap to the end.
    lags = torch.arange(-min(max_lag, n_r - 1), min(max_lag, n_m - 1) + 1)
    values = cc[lags % nfft]
    i = int(torch.argmax(values.abs()))
    lag = int(lags[i])
    frac = 0.0
    if 0 < i < len(lags) - 1:
        y0, y1, y2 = (float(values[i - 1].abs()), float(values[i].abs()), float(values[i + 1].abs()))
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            frac = max(-0.5, min(0.5, 0.5 * (y0 - y2) / denom))
    # Correlation at the refined lag, evaluated between samples (inverse DFT at a
    # fractional index, i.e. band-limited interpolation), over the norms of the
    # whitened signals where they overlap.
    peak = 0.0
    for a in range(0, cross.shape[-1], _BLOCK_BINS):  # piecewise: no full-length complex128 temporaries
        k = torch.arange(a, min(cross.shape[-1], a + _BLOCK_BINS), dtype=torch.float64)
        weight = torch.full_like(k, 2.0)
        weight[k == 0] = 1.0
        weight[k == cross.shape[-1] - 1] = 1.0
        phase = torch.exp(2j * math.pi * k * ((lag + frac) / nfft))
        peak += float((weight * (cross[a:a + k.shape[0]].to(torch.complex128) * phase).real).sum())
    peak /= nfft
    rw = torch.fft.irfft(R, n=nfft)[:n_r]
    mw = torch.fft.irfft(M, n=nfft)[:n_m]
    a, b = (rw, mw[lag:]) if lag >= 0 else (rw[-lag:], mw)
    n = min(a.shape[-1], b.shape[-1])
    corr = peak / max(float(a[:n].norm() * b[:n].norm()), 1e-20)
    return (lag + frac) * 1000.0 / rate, corr


def align(
    raw: torch.Tensor, mixed: torch.Tensor, offset_ms: float, sample_rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``offset_ms`` (rounded to a sample) from the start of the later signal, then match lengths.

    A mix that runs past the raw's end (a reverb or delay tail) is kept whole and the
    raw is padded with silence to its length; a raw that runs past the mix's end is
    cut there (there is no mix to compare it with).
    """
    shift = int(round(offset_ms * sample_rate / 1000.0))
    if shift >= 0:
        mixed = mixed[..., shift:]
    else:
        raw = raw[..., -shift:]
    n = mixed.shape[-1]
    if raw.shape[-1] < n:
        raw = torch.nn.functional.pad(raw, (0, n - raw.shape[-1]))
    return raw[..., :n], mixed


# ---------------------------------------------------------------------------
# checking pairs
# ---------------------------------------------------------------------------

def _silence_reason(x: torch.Tensor, sample_rate: int, which: str, staging_db: float | None = None) -> str | None:
    """Why ``x`` counts as silent (peak below -80 dBFS or loudness below -70 LUFS), or None.

    ``staging_db``, when given, is ``staging_gain_db(x)``: non-zero only for a file
    louder than -70 LUFS, which saves measuring the loudness again.
    """
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak < SILENT_PEAK:
        peak_db = 20 * math.log10(peak) if peak > 0 else float("-inf")
        return f"silent {which} file (peak {peak_db:.0f} dBFS)"
    if staging_db is not None and staging_db != 0.0:
        return None
    lufs = float(integrated_loudness(x.unsqueeze(0), sample_rate)[0])
    if not lufs > MIN_LOUDNESS_LUFS:
        return f"silent {which} file (loudness {lufs:.0f} LUFS, below {MIN_LOUDNESS_LUFS:.0f} LUFS)"
    return None


def _check_audio(name: str, raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, max_offset_s: float,
                 file_names: tuple[str, str] = ("raw", "mixed")) -> tuple[PairResult, AlignedPair | None]:
    """Check and align one decoded pair (both at ``sample_rate``); ``file_names`` are for the messages."""
    res = PairResult(name, "skipped")

    def skip(reason: str):
        res.reason = reason
        return res, None

    for which, x, file_name in (("raw", raw, file_names[0]), ("mixed", mixed, file_names[1])):
        if not torch.isfinite(x).all():
            return skip(f"{which} file {file_name} contains NaN or infinite samples; re-export it")
        dur = x.shape[-1] / sample_rate
        if dur < MIN_DURATION_S:
            return skip(f"{which} file too short ({dur:.2f} s; at least {MIN_DURATION_S:g} s needed)")
    staging = float(staging_gain_db(raw.unsqueeze(0), sample_rate)[0])  # on the whole raw file
    for which, x, g in (("raw", raw, staging), ("mixed", mixed, None)):
        reason = _silence_reason(x, sample_rate, which, g)
        if reason:
            return skip(reason)

    offset_ms, corr = estimate_offset(raw, mixed, sample_rate, max_offset_s)
    res.offset_ms, res.correlation = offset_ms, corr
    if abs(corr) < MIN_CORRELATION:
        return skip(
            f"mix does not match its raw (correlation {abs(corr):.2f} < {MIN_CORRELATION}); "
            "check that it is a mix of this take"
        )
    if corr < 0:
        mixed = -mixed
        res.warnings.append("mix polarity is inverted; flipped back for training")
    if abs(corr) < WEAK_CORRELATION:
        res.warnings.append(f"weak correlation with the raw ({abs(corr):.2f}); heavy effects or a different edit?")
    if abs(offset_ms) > 0.95 * max_offset_s * 1000:
        res.warnings.append(
            f"offset {offset_ms:.1f} ms is at the edge of the +-{max_offset_s * 1000:.0f} ms search; raise max_offset_s"
        )
    raw_len = raw.shape[-1] - max(0, -int(round(offset_ms * sample_rate / 1000.0)))  # the raw once its lead-in is cut
    raw_a, mixed_a = align(raw, mixed, offset_ms, sample_rate)
    del raw, mixed
    n = mixed_a.shape[-1]
    res.tail_s = max(0, n - raw_len) / sample_rate
    short_s = max(0, raw_len - n) / sample_rate  # the mix ends before the raw does
    if short_s > DURATION_DIFF_WARN_S or raw_len > DURATION_RATIO_WARN * n:
        res.warnings.append(f"the mix ends {short_s:.2f} s before the raw (raw {raw_len / sample_rate:.2f} s, "
                            f"mixed {n / sample_rate:.2f} s); is it the same take?")
    if res.tail_s > TAIL_WARN_S:
        res.warnings.append(f"the mix runs {res.tail_s:.1f} s past the raw's end; is it the same take?")
    if min(raw_len, n) / sample_rate < MIN_DURATION_S:
        return skip(f"too short once aligned ({min(raw_len, n) / sample_rate:.2f} s)")
    res.status = "ok"
    pair = AlignedPair.from_audio(name, raw_a, mixed_a, sample_rate, offset_ms, staging, abs(corr), res.tail_s)
    return res, pair


# -- the cache -----------------------------------------------------------------

def _settings_key(sample_rate: int, max_offset_s: float) -> dict:
    """Everything besides the two files' content that shapes a cache entry."""
    return {"version": CACHE_VERSION, "sample_rate": int(sample_rate), "max_offset_s": float(max_offset_s),
            "bits": CACHE_BITS, "analysis_rate": ANALYSIS_RATE, "band_hz": list(ANALYSIS_BAND_HZ),
            "min_correlation": MIN_CORRELATION, "weak_correlation": WEAK_CORRELATION, "min_duration_s": MIN_DURATION_S,
            "silent_peak": SILENT_PEAK, "durations": [DURATION_RATIO_WARN, DURATION_DIFF_WARN_S, TAIL_WARN_S]}


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _pair_key(raw_hash: str, mixed_hash: str, settings: dict) -> str:
    text = json.dumps({"raw": raw_hash, "mixed": mixed_hash, **settings}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _atomic_write(path: Path, write: Callable) -> None:
    """``write(file)`` into a temp file beside ``path``, then rename: a kill never leaves half an entry."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _pack24(frames: np.ndarray, raw_channels: int) -> tuple[np.ndarray, tuple[float, float]]:
    """(n, channels) float32 -> ((n, 3 x channels) uint8 little-endian 24-bit, (raw step, mix step))."""
    scales = []
    for cols in (slice(0, raw_channels), slice(raw_channels, None)):
        peak = float(np.abs(frames[:, cols]).max()) if frames[:, cols].size else 0.0
        scales.append(peak / _FULL_SCALE if peak > 0 else 1.0)
    steps = np.array([scales[0]] * raw_channels + [scales[1]] * (frames.shape[1] - raw_channels), dtype=np.float32)
    packed = np.empty((frames.shape[0], frames.shape[1] * 3), dtype=np.uint8)
    for a in range(0, frames.shape[0], _BLOCK_BINS):  # block by block: no full-length int32 copy of the song
        ints = np.ascontiguousarray(np.rint(frames[a:a + _BLOCK_BINS] / steps), dtype="<i4")
        packed[a:a + ints.shape[0]] = ints.view(np.uint8).reshape(ints.shape[0], ints.shape[1], 4)[:, :, :3].reshape(
            ints.shape[0], -1)
    return packed, (scales[0], scales[1])


def _unpack24(packed: np.ndarray, raw_channels: int, scales) -> np.ndarray:
    """Inverse of :func:`_pack24`: (n, 3 x channels) uint8 -> (n, channels) float32."""
    b = np.asarray(packed).reshape(packed.shape[0], -1, 3)
    ints = (b[..., 0].astype(np.int32) | (b[..., 1].astype(np.int32) << 8)
            | (b[..., 2].view(np.int8).astype(np.int32) << 16))  # the top byte carries the sign
    out = ints.astype(np.float32)
    out[:, :raw_channels] *= np.float32(scales[0])
    out[:, raw_channels:] *= np.float32(scales[1])
    return out


def _entry_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return cache_dir / f"{key}.json", cache_dir / f"{key}.npy"


def _read_entry(cache_dir: Path, key: str, name: str) -> tuple[PairResult, AlignedPair | None] | None:
    """A pair's cached result, or None when it is not (completely) in the cache."""
    meta_path, audio_path = _entry_paths(cache_dir, key)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    res = PairResult(name=name, **meta["result"], cached=True)
    if res.status != "ok":
        return res, None
    if not audio_path.exists():
        return None
    pair = AlignedPair(name=name, **{**meta["pair"], "cache_scales": tuple(meta["pair"]["cache_scales"])},
                       key=key, cache_path=audio_path)
    return res, pair


def _write_entry(cache_dir: Path, key: str, res: PairResult, pair: AlignedPair | None) -> AlignedPair | None:
    """Store a checked pair (audio as packed 24-bit frames, statistics as JSON); returns it reading from the cache."""
    meta_path, audio_path = _entry_paths(cache_dir, key)
    result = {k: v for k, v in asdict(res).items() if k not in ("name", "cached")}
    meta = {"result": result, "settings_version": CACHE_VERSION}
    cached = None
    if pair is not None:
        packed, scales = _pack24(pair.audio.T.numpy(), pair.raw_channels)
        _atomic_write(audio_path, lambda f: np.save(f, packed))
        del packed
        meta["pair"] = {k: v for k, v in asdict(pair).items() if k not in ("name", "key", "cache_path", "audio")}
        meta["pair"]["cache_scales"] = list(scales)
        cached = AlignedPair(**{**meta["pair"], "name": pair.name}, key=key, cache_path=audio_path)
    _atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1).encode()))  # last: marks the entry complete
    return cached


class _FileHashes:
    """(path, size, mtime) -> content hash, kept in the cache folder (as git's index), so that a
    second run hashes only files that changed."""

    def __init__(self, cache_dir: Path | None):
        self.path = cache_dir / "files.json" if cache_dir else None
        self.known: dict[str, str] = {}
        if self.path and self.path.exists():
            try:
                self.known = json.loads(self.path.read_text())
            except ValueError:
                self.known = {}

    @staticmethod
    def stamp(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, path: Path) -> str | None:
        try:
            return self.known.get(self.stamp(path))
        except OSError:
            return None

    def put(self, stamp: str, digest: str) -> None:
        self.known[stamp] = digest

    def save(self) -> None:
        if self.path:
            _atomic_write(self.path, lambda f: f.write(json.dumps(self.known, indent=0, sort_keys=True).encode()))


def _check_pair(pair: Pair, sample_rate: int, max_offset_s: float, cache_dir: str | None):
    """Check one pair, reading each of its files once; with a cache, store it there (or find it there).

    Returns (result, aligned pair or None, {stamp: content hash}).  Runs in a worker
    process for most pairs, so everything it returns is small when a cache is used.
    """
    cache = Path(cache_dir) if cache_dir else None
    contents, hashes, stamps = {}, {}, {}
    for which, path in (("raw", pair.raw_path), ("mixed", pair.mixed_path)):
        try:
            stamps[which] = _FileHashes.stamp(Path(path))
            with open(path, "rb") as f:
                contents[which] = f.read()
        except OSError as e:
            return PairResult(pair.name, "skipped", f"unreadable {which} file: cannot read {Path(path).name} "
                                                    f"({e.strerror}); check its permissions"), None, {}
        hashes[which] = content_hash(contents[which])
    seen = {stamps[w]: hashes[w] for w in stamps}
    key = _pair_key(hashes["raw"], hashes["mixed"], _settings_key(sample_rate, max_offset_s))
    if cache is not None:
        hit = _read_entry(cache, key, pair.name)
        if hit is not None:  # the same content under another name or date
            return (*hit, seen)
    audio = {}
    for which, path in (("raw", pair.raw_path), ("mixed", pair.mixed_path)):
        try:
            audio[which], _ = load_audio(path, sample_rate, data=contents.pop(which))
        except DataError as e:
            res = PairResult(pair.name, "skipped", f"unreadable {which} file: {e}")
            if cache is not None:
                _write_entry(cache, key, res, None)
            return res, None, seen
    res, aligned = _check_audio(pair.name, audio.pop("raw"), audio.pop("mixed"), sample_rate, max_offset_s,
                                (Path(pair.raw_path).name, Path(pair.mixed_path).name))
    if cache is not None:
        aligned = _write_entry(cache, key, res, aligned)
    elif aligned is not None:
        aligned.key = key
    return res, aligned, seen


def _worker_init() -> None:
    torch.set_num_threads(1)  # two processes on two cores; and results independent of the worker count


def check_pairs(
    pairs: Sequence[Pair],
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_offset_s: float = 0.5,
    progress: bool | None = None,
    cache_dir=None,
    workers: int = 1,
) -> CheckReport:
    """Read, check and align every pair; see :class:`CheckReport`.

    Per pair, in order: unreadable file, NaN/Inf samples, shorter than 0.5 s, silent
    (peak < -80 dBFS or loudness < -70 LUFS) -> skipped; offset and correlation of the
    mix against the raw (:func:`estimate_offset`) -> skipped when ``|correlation| <
    MIN_CORRELATION``, otherwise the mix is aligned to the raw (a tail past the raw's
    end is kept, see :func:`align`); a mix ending over 1 s (or 20 %) before its raw, or
    a tail over ``TAIL_WARN_S``, gets a warning.

    ``cache_dir``: store each checked pair there and read it back from there (see the
    module docstring); without it the pairs are kept in memory.  ``workers``: processes
    checking pairs side by side (each runs one torch thread; the results do not
    depend on the number).  ``progress``: tqdm bar on stderr; by default when there
    are more than 4 pairs.
    """
    report = CheckReport(sample_rate=int(sample_rate))
    if progress is None:
        progress = len(pairs) > 4
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    hashes = _FileHashes(cache)
    settings = _settings_key(sample_rate, max_offset_s)
    outcome: list = [None] * len(pairs)
    todo = []
    for i, pair in enumerate(pairs):  # known files: found in the cache without reading them
        raw_hash, mixed_hash = hashes.get(pair.raw_path), hashes.get(pair.mixed_path)
        hit = None
        if cache is not None and raw_hash and mixed_hash:
            hit = _read_entry(cache, _pair_key(raw_hash, mixed_hash, settings), pair.name)
        if hit is not None:
            outcome[i] = hit
        else:
            todo.append(i)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="checking pairs", unit="pair", file=sys.stderr)
    args = (sample_rate, max_offset_s, str(cache) if cache is not None else None)
    if workers > 1 and len(todo) >= 2 * workers:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: a forked copy of a process with torch's thread pools running can hang.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init) as pool:
            futures = {pool.submit(_check_pair, pairs[i], *args): i for i in todo}
            for future in as_completed(futures):
                res, aligned, seen = future.result()
                outcome[futures[future]] = (res, aligned)
                for stamp, digest in seen.items():
                    hashes.put(stamp, digest)
                if bar is not None:
                    bar.update()
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a worker, so the results do not depend on the worker count
        try:
            for i in todo:
                res, aligned, seen = _check_pair(pairs[i], *args)
                outcome[i] = (res, aligned)
                for stamp, digest in seen.items():
                    hashes.put(stamp, digest)
                if bar is not None:
                    bar.update()
        finally:
            torch.set_num_threads(threads)
    if bar is not None:
        bar.close()
    hashes.save()

    for res, aligned in outcome:
        report.results.append(res)
        report.warnings.extend(f"{res.name}: {w}" for w in res.warnings)
        if aligned is None:
            report.skipped.append(Skipped(res.name, res.reason))
        else:
            report.usable.append(aligned)
    return report


def check_dir(data_dir, sample_rate: int | None = DEFAULT_SAMPLE_RATE, max_offset_s: float = 0.5,
              progress: bool | None = None, cache_dir=None, workers: int = 1) -> CheckReport:
    """:func:`find_pairs` + :func:`check_pairs`; unmatched files become warnings of the report.

    ``sample_rate=None``: the catalogue's own (:func:`training_rate`).
    """
    pairs, unmatched_raw, unmatched_mixed = find_pairs(data_dir)
    if sample_rate is None:
        sample_rate = training_rate(pairs)
    report = check_pairs(pairs, sample_rate, max_offset_s, progress, cache_dir, workers)
    report.warnings.extend(f"{n}: raw file has no mix in mixed/ (ignored)" for n in unmatched_raw)
    report.warnings.extend(f"{n}: mix has no raw file in raw/ (ignored)" for n in unmatched_mixed)
    return report


# ---------------------------------------------------------------------------
# training helpers
# ---------------------------------------------------------------------------

def crop_start(pair: AlignedPair, length: int, generator: torch.Generator | None = None) -> int:
    """Where :func:`random_crop` starts its crop (uniform over the pair; 0 for a pair shorter than ``length``)."""
    n = pair.num_samples
    return 0 if n <= length else int(torch.randint(0, n - length + 1, (1,), generator=generator))


def random_crop(
    pair: AlignedPair, length: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned random crops (raw, mixed), each (channels, length); zero-padded at the end if the pair is shorter.

    Only the crop is read (see :meth:`AlignedPair.window`).
    """
    raw, mixed = pair.window(crop_start(pair, length, generator), length)
    pad = length - raw.shape[-1]
    if pad > 0:
        raw, mixed = torch.nn.functional.pad(raw, (0, pad)), torch.nn.functional.pad(mixed, (0, pad))
    return raw, mixed


def excerpt_loudness_offset_lu(mixed_excerpts: torch.Tensor, whole_lufs, sample_rate: int) -> torch.Tensor:
    """How much louder (LU) each (batch, channels, n) excerpt of a mix is than the whole mix (``whole_lufs``).

    The console's output stage puts a whole song on ``output.loudness_lufs``; an excerpt
    of that song sits above or below it by this much.  Training renders excerpts, so it
    asks the console for this offset to compare like with like.  0 where either is silent.
    """
    excerpt = integrated_loudness(mixed_excerpts, sample_rate).double()
    whole = torch.as_tensor(whole_lufs, dtype=torch.float64).reshape(-1).expand_as(excerpt)
    offset = excerpt - whole
    return torch.where(torch.isfinite(offset), offset, torch.zeros_like(offset)).float()


def split_by_song(
    names: Iterable[str], val_fraction: float = 0.1, seed: int = 0, song: Callable[[str], str] | None = None
) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split that never puts one song on both sides.

    ``song`` maps a pair name to its song (default: the name itself, one file per
    song; train.py passes :func:`song_of`); all names of a song go to the same side.  The result depends only on the
    set of names, ``val_fraction`` and ``seed`` (not their order).  With two or more
    songs and ``val_fraction > 0`` there is at least one validation song and at least
    one training song.  Both lists are sorted.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = sorted(set(names))
    key = song or (lambda n: n)
    songs = sorted({key(n) for n in names})
    order = songs[:]
    random.Random(seed).shuffle(order)
    n_val = int(round(val_fraction * len(songs)))
    if len(songs) >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), len(songs) - 1)
    else:
        n_val = 0 if len(songs) < 2 else n_val
    val_songs = set(order[:n_val])
    train = [n for n in names if key(n) not in val_songs]
    val = [n for n in names if key(n) in val_songs]
    return train, val


__all__ = [
    "AlignedPair", "CheckReport", "DataError", "Pair", "PairResult", "Skipped",
    "align", "check_dir", "check_pairs", "estimate_offset", "find_pairs", "load_audio",
    "random_crop", "resample", "song_of", "split_by_song", "to_layout", "to_mono", "training_rate",
]
