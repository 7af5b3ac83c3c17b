"""Synthetic long takes for the data and fit benchmarks, made from the shared voice recordings.

A *take* is real speech and singing from ``shared/data/voices`` (the files, in a
seeded order, joined with short pauses) as one mono vocal at 44.1 kHz.  Its *mix* is
stereo and longer: a fixed EQ tilt and gain per channel (scipy.signal, not dmst) and
a feedback echo whose repeats run ``tail_s`` past the raw's end, as a delay send does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
VOICES = ROOT.parent / "shared" / "data" / "voices"
SR = 44100


def _voice_files() -> list[Path]:
    files = sorted(VOICES.glob("*/*.flac"))
    if not files:
        raise SystemExit(f"no voice recordings under {VOICES}; this benchmark needs shared/data/voices")
    return files


_CACHE: dict[Path, np.ndarray] = {}


def take(seconds: float, seed: int) -> np.ndarray:
    """(n,) float32 mono vocal, ``seconds`` long, from the voices in a seeded order."""
    rng = np.random.default_rng(seed)
    files = _voice_files()
    parts, total, n = [], 0, int(seconds * SR)
    while total < n:
        f = files[int(rng.integers(len(files)))]
        if f not in _CACHE:
            x, sr = sf.read(f, dtype="float32", always_2d=True)
            _CACHE[f] = x.mean(1) if sr == SR else scipy.signal.resample_poly(x.mean(1), SR, sr).astype(np.float32)
        x = _CACHE[f] * np.float32(10 ** (rng.uniform(-8, 0) / 20))
        gap = np.zeros(int(rng.uniform(0.1, 0.6) * SR), np.float32)
        parts += [x, gap]
        total += x.size + gap.size
    return np.concatenate(parts)[:n]


def mix_of(raw: np.ndarray, tail_s: float = 2.0, seed: int = 0) -> np.ndarray:
    """(n + tail, 2) float32 stereo mix of a (n,) take: a high-shelf-ish tilt, channel gains, a feedback echo."""
    rng = np.random.default_rng(seed)
    sos = scipy.signal.butter(2, 150 / (SR / 2), "highpass", output="sos")
    dry = scipy.signal.sosfilt(sos, raw).astype(np.float32)
    n_tail = int(tail_s * SR)
    delay = int(0.3 * SR)
    wet = np.zeros(raw.size + n_tail, np.float32)
    wet[: raw.size] = dry
    echo = np.zeros_like(wet)
    for k in range(1, int(np.ceil(n_tail / delay)) + 2):  # echoes 0.3 s apart, each 6 dB down
        shift = k * delay
        if shift >= wet.size:
            break
        m = min(dry.size, wet.size - shift)
        echo[shift:shift + m] += dry[:m] * np.float32(0.5 ** k)
    left = 0.8 * wet + 0.35 * echo
    right = 0.7 * wet + 0.35 * np.roll(echo, int(0.011 * SR))
    out = np.stack([left, right], axis=1) * np.float32(10 ** (rng.uniform(-3, 3) / 20))
    return (out / max(1.0, float(np.abs(out).max()) / 0.9)).astype(np.float32)


def write_catalogue(folder: Path, pairs: int, seconds: float = 210.0, tail_s: float = 2.0, start_seed: int = 0) -> Path:
    """DATA/raw/NAME.wav (mono) and DATA/mixed/NAME.wav (stereo, with a tail), 16-bit, ``pairs`` of them."""
    (folder / "raw").mkdir(parents=True, exist_ok=True)
    (folder / "mixed").mkdir(parents=True, exist_ok=True)
    for i in range(start_seed, start_seed + pairs):
        raw = take(seconds, seed=i)
        sf.write(folder / "raw" / f"take{i:04d}.wav", raw, SR, subtype="PCM_16")
        sf.write(folder / "mixed" / f"take{i:04d}.wav", mix_of(raw, tail_s, seed=i), SR, subtype="PCM_16")
    return folder
