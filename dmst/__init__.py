"""dmst: vocal mixing that learns your style as settings you can read.

A model predicts interpretable EQ, compressor and saturation settings for a raw
vocal; differentiable DSP renders them.  The Python API in four lines::

    import dmst
    model = dmst.load_model()                       # the bundled model
    p = model.predict(audio, sr)                    # nested settings, physical units
    p = dmst.apply_presets(p, ["warm"], amount=0.5)
    y = dmst.render(audio, sr, p)                   # same type and shape as ``audio`` (a send on: stereo, with its tail)

``import dmst`` itself is cheap: everything that needs torch is imported on first use
(PEP 562 module ``__getattr__``), so ``dmst --help`` answers at once.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"  # keep in step with pyproject.toml

__all__ = ["__version__", "apply_presets", "load_model", "load_presets", "render", "schema"]

# Public name -> (module, attribute) it is imported from on first access.
_LAZY = {
    "schema": ("dmst.schema", None),
    "apply_presets": ("dmst.presets", "apply_presets"),
    "load_presets": ("dmst.presets", "load_presets"),
}


def load_model(name_or_path: str = "default"):
    """Load a dmst model: ``"default"`` is the model bundled with the package, anything else a path.

    Raises ``dmst.encoder.ModelError`` with a one-line message for a missing or invalid file.
    """
    from .encoder import load_model as _load_model

    return _load_model(name_or_path)


def render(audio, sample_rate: int, params):
    """Render ``audio`` through the console with the nested settings ``params``.

    ``audio``: (channels, samples) (or (samples,) for mono), a numpy array or a torch
    tensor; the result has the same type and float dtype, and the same shape unless a send (delay, reverb) is on,
    which returns in stereo: then a mono input gives (2, samples + tail), the output running on past the input
    until the returns have fallen 80 dB (at most 10 s: :func:`dmst.effects.sends.tail_samples`).  ``params`` is a nested dict in physical units
    (as ``model.predict`` or :func:`dmst.schema.from_json` give), validated here:
    a missing, unknown or out-of-range value raises :class:`dmst.schema.ParamError`.
    """
    import numpy as np
    import torch

    from . import console
    from . import schema as _schema

    flat = _schema.stack([params])  # validates: complete, known names, in range
    is_numpy = isinstance(audio, np.ndarray)
    x = torch.from_numpy(np.ascontiguousarray(audio)) if is_numpy else audio
    if x.dim() not in (1, 2):
        raise console.AudioError(f"audio must be (channels, samples) or (samples,), got shape {tuple(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    with torch.no_grad():
        x2 = x.to(torch.float32).reshape(-1, x.shape[-1])
        y = console.render(x2[None], int(sample_rate), flat, output_channels=2 if console.sends_on(flat) else None,
                           tail=True)[0]
        y = (y.reshape(x.shape) if y.shape == x2.shape else y).to(dtype)
    return y.numpy() if is_numpy else y


def __getattr__(name: str):
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dmst' has no attribute '{name}'") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
