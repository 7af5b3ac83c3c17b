"""Where an effect runs: the one place that chooses between the training path and the render path.

Every effect of the v3 console (de-esser, gate, delay, reverb, post-compressor EQ,
limiter) calls :func:`render_path` once, with its input and its parameters, and runs
its compiled loops (:mod:`._biquads`, :mod:`._ballistics`, :mod:`._fir`) only when it
says so; otherwise the same maths runs as differentiable torch operations.
"""
from __future__ import annotations

import torch


def render_path(x: torch.Tensor, *params) -> bool:
    """True when nothing needs a gradient and ``x`` is on the CPU: the compiled render loops apply.

    A gradient is needed when autograd is on and ``x`` or any tensor in ``params``
    requires one (training, ``dmst fit``).  On a GPU the torch path runs either way.
    """
    if x.device.type != "cpu":
        return False
    if not torch.is_grad_enabled():
        return True
    return not any(torch.is_tensor(v) and v.requires_grad for v in (x, *params))


def per_item(value, batch: int, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """A float or a (batch,) tensor as a (batch,) tensor on ``like``'s device (in ``like``'s dtype by default)."""
    v = torch.as_tensor(value, dtype=dtype or like.dtype, device=like.device)
    if v.numel() == 1:
        return v.reshape(1).expand(batch)
    if v.numel() != batch:
        raise ValueError(f"a parameter needs one value or one per item ({batch}), got {v.numel()}")
    return v.reshape(batch)
