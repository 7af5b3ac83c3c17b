"""The one module of dmst that imports torchaudio, and the check that torch and torchaudio load.

torchaudio's compiled library only loads with the torch release it was built for
(torchaudio 2.11.1 fails on torch 2.11.0 with ``undefined symbol:
torch_exception_get_what_without_backtrace``).  dmst therefore pins the pair exactly
(``pyproject.toml``, ``constraints.txt``), and everything it uses of torchaudio goes
through the few functions below, so that replacing torchaudio one day touches this file
only:

* :func:`resample`: band-limited sinc resampling (``torchaudio.functional.resample``);
* :func:`resampler`: the configured ``torchaudio.transforms.Resample``, whose kernel the
  oversampling code in :mod:`dmst.effects.resample` runs itself;
* :func:`mel_spectrogram`: the encoder's ``torchaudio.transforms.MelSpectrogram``.

Importing this module is cheap and never imports torch: a broken install is reported by
:func:`check_stack` as one :class:`StackError` line instead of a traceback.
"""
from __future__ import annotations

import functools
import importlib.metadata
import math

# The pair dmst is tested with; tests/test_install.py checks pyproject.toml and the
# installed versions against these.
TORCH_PIN = "2.11.0"
TORCHAUDIO_PIN = "2.11.0"
REINSTALL = f"reinstall the pinned pair: pip install torch=={TORCH_PIN} torchaudio=={TORCHAUDIO_PIN}"


class StackError(ImportError):
    """torch or torchaudio is missing or cannot be loaded (a broken or mismatched install)."""


def installed_version(package: str) -> str | None:
    """The installed distribution's version (without a local tag such as ``+cpu``), or None."""
    try:
        return importlib.metadata.version(package).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 160 else text[:157] + "..."


@functools.lru_cache(maxsize=None)
def _modules():
    """(torch, torchaudio.functional, torchaudio.transforms), imported once; StackError if they cannot load."""
    torch_version = installed_version("torch")
    try:
        import torch
    except (ImportError, OSError) as e:
        if torch_version is None:
            raise StackError(f"torch is not installed; {REINSTALL}") from None
        raise StackError(f"torch {torch_version} cannot be loaded ({_reason(e)}); {REINSTALL}") from None
    audio_version = installed_version("torchaudio")
    try:
        import torchaudio.functional as functional
        import torchaudio.transforms as transforms
    except (ImportError, OSError, RuntimeError) as e:
        if audio_version is None:
            raise StackError(f"torchaudio is not installed; {REINSTALL}") from None
        raise StackError(f"torchaudio {audio_version} cannot load with torch {torch_version or torch.__version__} "
                         f"({_reason(e)}); {REINSTALL}") from None
    return torch, functional, transforms


def check_stack() -> None:
    """Load torch and torchaudio now; raise :class:`StackError` with a one-line message if they cannot."""
    _modules()


def versions() -> dict[str, str]:
    """The versions of torch and torchaudio in use."""
    torch, _, _ = _modules()
    import torchaudio

    return {"torch": str(torch.__version__), "torchaudio": str(torchaudio.__version__)}


# torchaudio runs one strided conv1d over the whole signal, and the CPU conv1d unfolds its input into
# kernel-length columns: for a 3.5-minute take decimated 2:1 that is a 0.5 GB buffer (14 copies of the signal).
# :func:`resample` convolves in blocks when that buffer would exceed this many elements (64 MB of float32), each
# block's a quarter of it: short signals (crops, tests) take torchaudio's call exactly as before.
RESAMPLE_UNFOLD_MAX = 1 << 24


def _sinc_kernel(*args, **kwargs):
    """torchaudio's windowed-sinc resampling kernel and its width (what ``functional.resample`` convolves with)."""
    _modules()
    from torchaudio.functional.functional import _get_sinc_resample_kernel

    return _get_sinc_resample_kernel(*args, **kwargs)


def resample(x, orig_freq: int, new_freq: int, **kwargs):
    """``torchaudio.functional.resample``: band-limited sinc resampling along the last axis.

    The same kernel and output as torchaudio's (its windowed-sinc kernel, zero padding and
    output length); a long signal is convolved in blocks of output frames (see
    ``RESAMPLE_UNFOLD_MAX``), so that it does not need an unfolded copy of itself many times
    its size.  Each output sample is the same dot product as torchaudio's, summed in an order
    that may differ in the last bit (float rounding).
    """
    torch, functional, _ = _modules()
    orig_freq, new_freq = int(orig_freq), int(new_freq)
    if orig_freq <= 0 or new_freq <= 0 or orig_freq == new_freq or not x.is_floating_point():
        return functional.resample(x, orig_freq, new_freq, **kwargs)  # its own checks and messages
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    kernel, width = _sinc_kernel(orig_freq, new_freq, gcd, **kwargs, device=x.device, dtype=x.dtype)
    taps = kernel.shape[-1]
    shape = x.shape
    waves = x.reshape(-1, shape[-1])
    length = waves.shape[-1]
    frames = (length + 2 * width + orig - taps) // orig + 1  # of torchaudio's padded signal
    if frames * taps * waves.shape[0] <= RESAMPLE_UNFOLD_MAX:
        return functional.resample(x, orig_freq, new_freq, **kwargs)
    step = max(1, RESAMPLE_UNFOLD_MAX // (4 * taps * waves.shape[0]))
    padded = torch.nn.functional.pad(waves, (width, width + orig))[:, None]  # torchaudio's padding
    blocks = [torch.nn.functional.conv1d(padded[..., a * orig:(min(frames, a + step) - 1) * orig + taps], kernel,
                                         stride=orig)
              for a in range(0, frames, step)]
    del padded
    out = (torch.cat(blocks, dim=-1) if len(blocks) > 1 else blocks[0]).transpose(1, 2).reshape(waves.shape[0], -1)
    return out[..., :math.ceil(new * length / orig)].reshape(*shape[:-1], -1)


def resampler(orig_freq: int, new_freq: int, **kwargs):
    """A ``torchaudio.transforms.Resample`` module (its ``kernel`` and ``width`` define the filter)."""
    return _modules()[2].Resample(int(orig_freq), int(new_freq), **kwargs)


def mel_spectrogram(**kwargs):
    """A ``torchaudio.transforms.MelSpectrogram`` module (its buffers are part of the encoder's state)."""
    return _modules()[2].MelSpectrogram(**kwargs)
