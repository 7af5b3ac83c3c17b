"""Differentiable vocal effects: pure functions over (batch, channels, samples) tensors.

Each takes per-item parameters as (batch,) tensors (or floats) named as in
:mod:`dmst.schema`, works at any sample rate, and treats stereo with one linked
setting for both channels.
"""
from .compressor import compressor, gain_computer
from .eq import biquad, eq_sos, parametric_eq, sosfilt_fft
from .gain import gain, integrated_loudness, loudness_normalize, staging_gain_db
from .saturation import saturation

__all__ = [
    "biquad", "compressor", "eq_sos", "gain", "gain_computer", "integrated_loudness", "loudness_normalize",
    "parametric_eq", "saturation", "sosfilt_fft", "staging_gain_db",
]
