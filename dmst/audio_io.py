"""Reading and writing audio files safely, and measuring their true peak.

* :func:`read_audio` refuses anything the console cannot render (missing, a folder,
  not audio, empty, too short, NaN/Inf samples) with a one-line
  :class:`AudioFileError` saying what is wrong and what to do.
* :func:`write_audio` (and :func:`write_bytes` for JSON and PNG files) write
  atomically: a temporary file in the destination folder, flushed and fsynced, then
  ``os.replace``d over the destination, so a crash or a full disk never leaves a
  half-written file under the final name.  They refuse to overwrite an input, and an
  existing file unless ``force=True``.
* :func:`true_peak_dbfs` is the oversampled peak of ITU-R BS.1770-4, annex 2.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

# Shorter files are refused: nothing to mix, and level and loudness measurements of a
# few milliseconds are meaningless.  1024 samples is 23 ms at 44.1 kHz.
MIN_SAMPLES = 1024

# Extensions collected from a folder given as input (files are also read by content,
# so any format libsndfile knows works when named directly).
AUDIO_EXTENSIONS = (".wav", ".flac", ".aif", ".aiff", ".ogg", ".mp3", ".w64", ".rf64", ".caf")

FORMATS = ("wav", "flac")

BIT_DEPTHS = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
DITHER_SEED = 0  # 16-bit output is dithered from this seed: the same render writes the same file


class AudioFileError(ValueError):
    """An audio file that cannot be read, or an output that must not be written (one-line message)."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    format: str  # libsndfile's format name, e.g. "WAV"
    subtype: str  # e.g. "PCM_24"
    channels: int
    frames: int
    sample_rate: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def check_input(path) -> AudioInfo:
    """Check that ``path`` is a readable audio file of at least ``MIN_SAMPLES`` frames (header only)."""
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"input file {path} not found; check the path")
    if path.is_dir():
        raise AudioFileError(f"{path} is a folder, not an audio file; pass a file")
    if not path.is_file():
        raise AudioFileError(f"{path} is not a regular file; pass an audio file")
    try:
        with open(path, "rb") as f:
            empty = not f.read(1)
    except OSError as e:
        raise AudioFileError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    if empty:
        raise AudioFileError(f"{path} is empty (0 bytes); re-export the recording")
    try:
        info = sf.info(str(path))
    except (RuntimeError, TypeError, ValueError) as e:  # sf.LibsndfileError is a RuntimeError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioFileError(
            f"{path} is not an audio file dmst can read ({reason}); use WAV, FLAC, AIFF or OGG"
        ) from None
    if info.frames <= 0:
        raise AudioFileError(f"{path} contains no audio (0 frames); re-export the recording")
    if info.frames < MIN_SAMPLES:
        raise AudioFileError(
            f"{path} is too short ({info.frames} samples); dmst needs at least {MIN_SAMPLES} samples "
            f"({1000 * MIN_SAMPLES / info.samplerate:.0f} ms at {info.samplerate} Hz)"
        )
    return AudioInfo(str(path), info.format, info.subtype, info.channels, info.frames, info.samplerate)


def read_audio(path) -> tuple[np.ndarray, int, AudioInfo]:
    """Read an audio file as float32 ``(channels, samples)``, with its sample rate and :class:`AudioInfo`."""
    info = check_input(path)
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioFileError(f"{path} could not be decoded ({reason}); re-export it as WAV or FLAC") from None
    if data.shape[0] < MIN_SAMPLES:  # a header that promised more than the file holds
        raise AudioFileError(
            f"{path} is too short ({data.shape[0]} samples); dmst needs at least {MIN_SAMPLES} samples"
        )
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.argmin(finite.all(axis=1)))
        raise AudioFileError(
            f"{path} contains NaN or infinite samples (first at {first / sample_rate:.3f} s); "
            "repair or re-export the file"
        )
    return np.ascontiguousarray(data.T), int(sample_rate), info


def find_audio_files(folder) -> list[Path]:
    """Audio files directly inside ``folder`` (by extension), sorted by name."""
    folder = Path(folder)
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links, case-insensitive file systems
    return False


def check_output(path, inputs: Iterable = (), force: bool = False) -> Path:
    """Refuse an output path that is an input, exists (unless ``force``) or cannot be written."""
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise AudioFileError(f"output {path} is the input file; choose another output name or folder")
    if path.is_dir():
        raise AudioFileError(f"output {path} is a folder; give a file name (or use --out-dir for a folder)")
    if path.exists() and not force:
        raise AudioFileError(f"output {path} already exists; use --force to overwrite it or choose another name")
    folder = path.parent
    if not folder.exists():
        # The nearest existing ancestor tells whether the folder could be created at all.
        ancestor = next((a for a in folder.parents if a.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            raise AudioFileError(f"cannot write {path}: {ancestor} is a file, not a folder; choose another output folder")
        raise AudioFileError(f"output folder {folder} does not exist; create it or choose another output")
    if not folder.is_dir():
        raise AudioFileError(f"cannot write {path}: {folder} is not a folder; choose another output folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AudioFileError(f"cannot write to folder {folder} (permission denied); choose a writable folder")
    return path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path):
    """Open a temporary file next to ``path`` for binary writing; on success fsync and rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise AudioFileError(f"cannot write to folder {path.parent} ({e.strerror}); choose a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # Keep the mode of a file being replaced, else what a plain open() would give.
        mode = path.stat().st_mode & 0o777 if path.exists() else _default_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes(path, data: bytes, inputs: Iterable = (), force: bool = False) -> Path:
    """Atomically write ``data`` to ``path`` (see :func:`check_output` for what is refused)."""
    path = check_output(path, inputs, force)
    try:
        with atomic_open(path) as f:
            f.write(data)
    except OSError as e:
        raise AudioFileError(f"cannot write {path} ({e.strerror}); check the disk and folder") from None
    return path


def check_format(format: str, bit_depth: str) -> str:
    """The libsndfile subtype for ``format`` and ``bit_depth``, or an error naming the valid choices."""
    if format not in FORMATS:
        raise AudioFileError(f"unknown output format '{format}'; valid formats: {', '.join(FORMATS)}")
    if bit_depth not in BIT_DEPTHS:
        raise AudioFileError(f"unknown bit depth '{bit_depth}'; valid bit depths: {', '.join(BIT_DEPTHS)}")
    if format == "flac" and bit_depth == "32f":
        raise AudioFileError("FLAC stores integer samples only; use --bit-depth 16 or 24, or --format wav for 32-bit float")
    return BIT_DEPTHS[bit_depth]


def quantize_16(audio: np.ndarray, seed: int = DITHER_SEED) -> np.ndarray:
    """Float ``(channels, samples)`` audio as 16-bit integers, with TPDF dither.

    Triangular-PDF dither of +-1 LSB (the sum of two independent uniform variables of
    1 LSB each) is added before rounding, as mastering tools do (Lipshitz, Wannamaker
    and Vanderkooy, "Quantization and Dither: A Theoretical Survey", JAES 40(5), 1992):
    the error's mean and variance (1/4 LSB^2) then do not depend on the signal, so
    quiet fades and reverb tails do not turn into distortion.  The noise is seeded,
    so a render is repeatable.  1 LSB = 1/32768, the scale soundfile reads 16-bit with.
    """
    rng = np.random.default_rng(seed)
    dither = rng.random(audio.shape, dtype=np.float64) - rng.random(audio.shape, dtype=np.float64)
    return np.clip(np.round(audio.astype(np.float64) * 32768.0 + dither), -32768, 32767).astype(np.int16)


def write_audio(
    path,
    audio,
    sample_rate: int,
    format: str = "wav",
    bit_depth: str = "16",
    inputs: Iterable = (),
    force: bool = False,
) -> Path:
    """Atomically write ``(channels, samples)`` audio (numpy or torch) as WAV or FLAC.

    ``bit_depth`` is ``"16"`` (TPDF-dithered: :func:`quantize_16`), ``"24"`` (integer PCM:
    samples beyond +-1 clip) or ``"32f"`` (float WAV).  Refuses ``path`` if it is one of ``inputs``, or exists and not ``force``.
    """
    subtype = check_format(format, bit_depth)
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise AudioFileError(f"audio to write must be (channels, samples), got shape {audio.shape}")
    path = check_output(path, inputs, force)
    try:
        with atomic_open(path) as f:
            with sf.SoundFile(f, "w", samplerate=int(sample_rate), channels=audio.shape[0],
                              subtype=subtype, format=format.upper()) as out:
                out.write(np.ascontiguousarray((quantize_16(audio) if bit_depth == "16" else audio).T))
    except OSError as e:
        raise AudioFileError(f"cannot write {path} ({e.strerror}); check the disk and folder") from None
    return path


# ---------------------------------------------------------------------------
# true peak
# ---------------------------------------------------------------------------

def true_peak_dbfs(audio, sample_rate: int) -> float:
    """True peak of ``(channels, samples)`` audio in dBFS (dBTP), ITU-R BS.1770-4 annex 2 style.

    The signal is oversampled (4x below 96 kHz, 2x below 192 kHz, as the annex asks) with
    a band-limited sinc interpolator and the largest absolute value taken, so peaks
    between samples, the ones a DAC or a lossy encoder will reproduce, are found.
    Silence gives ``-inf``.
    """
    import torch

    # torchaudio's kernel as a compiled FIR (equal to float rounding), only its largest magnitude kept
    from .effects.resample import TRUE_PEAK_RESAMPLE, upsampled_peaks

    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not hasattr(audio, "detach") else audio.detach())
    x = x.to(torch.float32).reshape(-1, x.shape[-1])
    factor = 4 if sample_rate < 96000 else 2 if sample_rate < 192000 else 1
    peak = float(x.abs().max()) if x.numel() else 0.0
    if factor > 1:
        block, pad = 2**20, 64  # blocks keep memory small for long files; pad > half the filter
        n = x.shape[-1]
        with torch.no_grad():
            for start in range(0, n, block):
                lo = max(0, start - pad)
                up = upsampled_peaks(x[:, lo: start + block + pad], factor, **TRUE_PEAK_RESAMPLE)
                # Only this block's own samples: the cut edges of the padding ring.
                keep = up[start - lo: start - lo + min(block, n - start)]
                peak = max(peak, float(keep.abs().max()))
    return 20 * math.log10(peak) if peak > 0 else float("-inf")


__all__ = [
    "AUDIO_EXTENSIONS", "AudioFileError", "AudioInfo", "BIT_DEPTHS", "FORMATS", "MIN_SAMPLES", "atomic_open",
    "check_format", "check_input", "check_output", "find_audio_files", "quantize_16", "read_audio", "true_peak_dbfs",
    "write_audio", "write_bytes",
]
