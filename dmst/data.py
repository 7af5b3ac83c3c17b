"""Training data: (raw, mixed) vocal pairs on disk, checked and aligned.

Layout::

    DATA/raw/NAME.wav      the unprocessed vocal
    DATA/mixed/NAME.flac   the engineer's mix of that same take

Files are matched by stem (``NAME``); the extensions may differ (anything soundfile
reads: wav, flac, aiff/aif, ogg, mp3, ...).  Any sample rate is resampled to the
model rate; channels are kept as loaded (a mono raw and a stereo mix is fine).

:func:`find_pairs` matches names; :func:`check_pairs` loads every pair and decides,
with a reason for each, which pairs are fit to train on: unreadable, too short or
silent files are skipped, and so is a mix that does not correlate with its raw
(wrong file, different take), so nothing is ever silently trained on against an
unrelated target.  The mix's time offset against the raw is measured by
cross-correlation and removed, since the loss compares the two sample by sample.
"""
from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from ._torchaudio import resample
from .effects.gain import MIN_LOUDNESS_LUFS, integrated_loudness, staging_gain_db

DEFAULT_SAMPLE_RATE = 44100
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".mp3", ".caf", ".w64", ".rf64"}
)

MIN_DURATION_S = 0.5  # shorter files carry too little to train on (and to align reliably)
SILENT_PEAK = 1e-4  # -80 dBFS
DURATION_RATIO_WARN = 1.2  # raw and mix lengths differing by more than this (or by > 1 s) get a warning
DURATION_DIFF_WARN_S = 1.0

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
    """A checked pair ready for training: ``raw`` and ``mixed`` are (channels, n), same n, aligned."""

    name: str
    raw: torch.Tensor
    mixed: torch.Tensor
    sample_rate: int
    offset_ms: float  # > 0: the mix started later than the raw (that much was cut from its start)
    staging_db: float  # console input gain, measured on the whole raw file (staging_gain_db)
    correlation: float  # normalised correlation of the aligned, whitened mono downmixes
    _mixed_lufs: float | None = field(default=None, repr=False)

    @property
    def mixed_lufs(self) -> float:
        """Integrated loudness (LUFS) of the whole mix's mono downmix, as training sees it; measured once."""
        if self._mixed_lufs is None:
            self._mixed_lufs = float(integrated_loudness(to_mono(self.mixed)[None], self.sample_rate)[0])
        return self._mixed_lufs

    @property
    def num_samples(self) -> int:
        return int(self.raw.shape[-1])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass
class PairResult:
    """What :func:`check_pairs` found for one pair."""

    name: str
    status: str  # "ok" or "skipped"
    reason: str = ""  # why it was skipped
    offset_ms: float | None = None
    correlation: float | None = None
    warnings: list[str] = field(default_factory=list)


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

    def format(self) -> str:
        """A short human-readable report: one line per problem, then "N pairs usable, M skipped"."""
        lines = [f"skipped {s.name}: {s.reason}" for s in self.skipped]
        lines += [f"warning {w}" for w in self.warnings]
        n, m = len(self.usable), len(self.skipped)
        lines.append(f"{n} pair{'s' if n != 1 else ''} usable, {m} skipped")
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


# ---------------------------------------------------------------------------
# audio helpers
# ---------------------------------------------------------------------------

def load_audio(path, sample_rate: int = DEFAULT_SAMPLE_RATE) -> tuple[torch.Tensor, int]:
    """Read a file as float32 (channels, n), resampled to ``sample_rate``; also returns the file's own rate.

    Raises :class:`DataError` (one line) for a file soundfile cannot read.
    """
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        msg = msg.split("': ", 1)[-1].rstrip(".")  # drop soundfile's "Error opening '<full path>': "
        raise DataError(f"cannot read {Path(path).name} ({msg}); re-export it as WAV or FLAC") from None
    x = torch.from_numpy(np.ascontiguousarray(data.T))
    if file_rate != sample_rate and x.shape[-1] > 0:
        x = resample(x, int(file_rate), int(sample_rate))
    return x, int(file_rate)


def to_mono(x: torch.Tensor) -> torch.Tensor:
    """Mono downmix (mean of the channels) of (channels, n) audio, as (1, n)."""
    x = torch.as_tensor(x)
    if x.dim() == 1:
        return x.unsqueeze(0)
    return x.mean(dim=0, keepdim=True)


def _smoothed_magnitude(mag: torch.Tensor, fraction: float = 1 / 3) -> torch.Tensor:
    """Moving average of a magnitude spectrum over a constant-Q window ``fraction`` of an octave wide."""
    k = torch.arange(mag.shape[-1], dtype=torch.float64)
    c = 2.0 ** (fraction / 2)
    lo = torch.clamp(torch.floor(k / c) - 1, min=0).long()
    hi = torch.clamp(torch.ceil(k * c) + 1, max=mag.shape[-1] - 1).long()
    cs = torch.nn.functional.pad(torch.cumsum(mag.to(torch.float64), dim=-1), (1, 0))
    return ((cs[..., hi + 1] - cs[..., lo]) / (hi + 1 - lo)).to(mag.dtype)


def _band_weight(nfft: int, rate: int, band: tuple[float, float]) -> torch.Tensor:
    """Raised-cosine band-pass weight on the rfft grid: 1 inside ``band``, 0 below half its low
    edge and above 4/3 of its high edge."""
    f = torch.fft.rfftfreq(nfft, 1.0 / rate).to(torch.float64)
    lo, hi = band
    w = torch.ones_like(f)
    t_lo = torch.clamp(torch.log2(f.clamp_min(1e-9) / (lo / 2)), 0, 1)  # 0 at lo/2 -> 1 at lo
    t_hi = torch.clamp(torch.log2(torch.full_like(f, hi * 4 / 3) / f.clamp_min(1e-9)) / math.log2(4 / 3), 0, 1)
    w = w * 0.5 * (1 - torch.cos(math.pi * t_lo)) * 0.5 * (1 - torch.cos(math.pi * t_hi))
    return w.to(torch.float32)


def _fast_length(n: int) -> int:
    """Smallest even 2^a 3^b 5^c >= n (a length the FFT handles fast)."""
    best = 1 << int(math.ceil(math.log2(max(n, 2))))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            v = p35
            while v < n:
                v *= 2
            if v % 2 == 0 and v < best:
                best = v
            p35 *= 3
        p5 *= 5
    return best


def _whiten(x: torch.Tensor, nfft: int, rate: int) -> torch.Tensor:
    """Spectrum of 1-D ``x`` divided by its own smoothed magnitude, band-limited (rfft of length nfft)."""
    spec = torch.fft.rfft(x, n=nfft)
    mag = spec.abs()
    floor = mag.mean() * 1e-3 + 1e-20
    return spec / (_smoothed_magnitude(mag) + floor) * _band_weight(nfft, rate, ANALYSIS_BAND_HZ)


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
    nfft = _fast_length(n_r + n_m + 1)  # no circular wrap between the two
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
    k = torch.arange(cross.shape[-1], dtype=torch.float64)
    weight = torch.full_like(k, 2.0)
    weight[0] = 1.0
    weight[-1] = 1.0
    phase = torch.exp(2j * math.pi * k * ((lag + frac) / nfft))
    peak = float((weight * (cross.to(torch.complex128) * phase).real).sum()) / nfft
    rw = torch.fft.irfft(R, n=nfft)[:n_r]
    mw = torch.fft.irfft(M, n=nfft)[:n_m]
    a, b = (rw, mw[lag:]) if lag >= 0 else (rw[-lag:], mw)
    n = min(a.shape[-1], b.shape[-1])
    corr = peak / max(float(a[:n].norm() * b[:n].norm()), 1e-20)
    return (lag + frac) * 1000.0 / rate, corr


def align(
    raw: torch.Tensor, mixed: torch.Tensor, offset_ms: float, sample_rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``offset_ms`` (rounded to a sample) from the start of the later signal; trim both to the common length."""
    shift = int(round(offset_ms * sample_rate / 1000.0))
    if shift >= 0:
        mixed = mixed[..., shift:]
    else:
        raw = raw[..., -shift:]
    n = min(raw.shape[-1], mixed.shape[-1])
    return raw[..., :n], mixed[..., :n]


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


def _check_one(pair: Pair, sample_rate: int, max_offset_s: float) -> tuple[PairResult, AlignedPair | None]:
    res = PairResult(pair.name, "skipped")

    def skip(reason: str):
        res.reason = reason
        return res, None

    audio = {}
    for which, path in (("raw", pair.raw_path), ("mixed", pair.mixed_path)):
        try:
            audio[which], _ = load_audio(path, sample_rate)
        except DataError as e:
            return skip(f"unreadable {which} file: {e}")
        x = audio[which]
        if not torch.isfinite(x).all():
            return skip(f"{which} file {path.name} contains NaN or infinite samples; re-export it")
        dur = x.shape[-1] / sample_rate
        if dur < MIN_DURATION_S:
            return skip(f"{which} file too short ({dur:.2f} s; at least {MIN_DURATION_S:g} s needed)")
    raw, mixed = audio["raw"], audio["mixed"]
    staging = float(staging_gain_db(raw.unsqueeze(0), sample_rate)[0])  # on the whole raw file
    for which, x, g in (("raw", raw, staging), ("mixed", mixed, None)):
        reason = _silence_reason(x, sample_rate, which, g)
        if reason:
            return skip(reason)

    d_raw, d_mix = raw.shape[-1] / sample_rate, mixed.shape[-1] / sample_rate
    if max(d_raw, d_mix) / min(d_raw, d_mix) > DURATION_RATIO_WARN or abs(d_raw - d_mix) > DURATION_DIFF_WARN_S:
        res.warnings.append(f"durations differ (raw {d_raw:.2f} s, mixed {d_mix:.2f} s); is it the same take?")

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
    raw_a, mixed_a = align(raw, mixed, offset_ms, sample_rate)
    if raw_a.shape[-1] / sample_rate < MIN_DURATION_S:
        return skip(f"too short once aligned ({raw_a.shape[-1] / sample_rate:.2f} s)")
    res.status = "ok"
    return res, AlignedPair(pair.name, raw_a.contiguous(), mixed_a.contiguous(), int(sample_rate),
                            float(offset_ms), staging, abs(corr))


def check_pairs(
    pairs: Sequence[Pair],
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    max_offset_s: float = 0.5,
    progress: bool | None = None,
) -> CheckReport:
    """Load, check and align every pair; see :class:`CheckReport`.

    Per pair, in order: unreadable file, NaN/Inf samples, shorter than 0.5 s, silent
    (peak < -80 dBFS or loudness < -70 LUFS) -> skipped; durations differing by more
    than 20 % or 1 s -> warning; offset and correlation of the mix against the raw
    (:func:`estimate_offset`) -> skipped when ``|correlation| < MIN_CORRELATION``,
    otherwise the mix is aligned to the raw and both are trimmed to their common
    length.  ``progress``: tqdm bar on stderr; by default when there are more than 4 pairs.
    """
    report = CheckReport()
    if progress is None:
        progress = len(pairs) > 4
    it: Iterable[Pair] = pairs
    if progress:
        from tqdm import tqdm

        it = tqdm(pairs, desc="checking pairs", unit="pair", file=sys.stderr)
    for pair in it:
        res, aligned = _check_one(pair, sample_rate, max_offset_s)
        report.results.append(res)
        report.warnings.extend(f"{pair.name}: {w}" for w in res.warnings)
        if aligned is None:
            report.skipped.append(Skipped(pair.name, res.reason))
        else:
            report.usable.append(aligned)
    return report


def check_dir(data_dir, sample_rate: int = DEFAULT_SAMPLE_RATE, max_offset_s: float = 0.5,
              progress: bool | None = None) -> CheckReport:
    """:func:`find_pairs` + :func:`check_pairs`; unmatched files become warnings of the report."""
    pairs, unmatched_raw, unmatched_mixed = find_pairs(data_dir)
    report = check_pairs(pairs, sample_rate, max_offset_s, progress)
    report.warnings.extend(f"{n}: raw file has no mix in mixed/ (ignored)" for n in unmatched_raw)
    report.warnings.extend(f"{n}: mix has no raw file in raw/ (ignored)" for n in unmatched_mixed)
    return report


# ---------------------------------------------------------------------------
# training helpers
# ---------------------------------------------------------------------------

def random_crop(
    pair: AlignedPair, length: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligned random crops (raw, mixed), each (channels, length); zero-padded at the end if the pair is shorter."""
    n = pair.raw.shape[-1]
    if n <= length:
        pad = length - n
        return (torch.nn.functional.pad(pair.raw, (0, pad)), torch.nn.functional.pad(pair.mixed, (0, pad)))
    start = int(torch.randint(0, n - length + 1, (1,), generator=generator))
    return pair.raw[..., start:start + length], pair.mixed[..., start:start + length]


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
    song); all names of a song go to the same side.  The result depends only on the
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
    "random_crop", "split_by_song", "to_mono",
]
