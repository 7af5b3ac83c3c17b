"""Measurement helpers shared by the v3 effect tests (independent of the code under test)."""
from __future__ import annotations

import math

import numpy as np
import torch


def rms_db(v) -> float:
    v = np.asarray(v, dtype=np.float64)
    return 10 * math.log10(np.mean(v**2) + 1e-300)


def crossing_time(g: np.ndarray, start: int, target: float, rising: bool, fs: int) -> float:
    """Seconds from ``start`` to the first (interpolated) crossing of ``target`` by ``g``."""
    seg = g[start:]
    hit = np.nonzero(seg >= target if rising else seg <= target)[0][0]
    if hit == 0:
        return 0.0
    g0, g1 = seg[hit - 1], seg[hit]
    return (hit - 1 + (target - g0) / (g1 - g0)) / fs


def error_db(got, want) -> float:
    """Level of ``got - want`` relative to ``want``, dB (RMS over everything)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return 20 * math.log10(np.sqrt(np.mean((got - want) ** 2)) / np.sqrt(np.mean(want**2)) + 1e-300)


def both_paths(effect, x: torch.Tensor, sample_rate, **params):
    """(render-path output, training-path output) of ``effect``: without autograd, then with every input needing a gradient."""
    with torch.no_grad():
        fast = effect(x, sample_rate, **params)
    leaves = {k: torch.as_tensor(v, dtype=x.dtype).clone().requires_grad_() for k, v in params.items()}
    slow = effect(x.clone().requires_grad_(), sample_rate, **leaves)
    return fast, slow.detach()


def gradients(effect, x: torch.Tensor, sample_rate, loss=None, **params) -> dict[str, float]:
    """d loss / d parameter for every parameter (loss: mean square of the output by default)."""
    leaves = {k: torch.tensor([float(v)], dtype=x.dtype, requires_grad=True) for k, v in params.items()}
    y = effect(x, sample_rate, **leaves)
    (y.pow(2).mean() if loss is None else loss(y)).backward()
    return {k: float(v.grad) for k, v in leaves.items()}


def fit(effect, x: torch.Tensor, sample_rate, target: torch.Tensor, start: dict, fixed: dict, scales: dict,
        loss, steps: int = 60, lr: float = 0.05) -> tuple[float, float, dict]:
    """Gradient descent (Adam) on ``start``'s parameters, each as value = scale * u: (first loss, last loss, values)."""
    u = {k: torch.tensor([v / scales[k]], dtype=torch.float64, requires_grad=True) for k, v in start.items()}
    opt = torch.optim.Adam(list(u.values()), lr=lr)
    # The step size decays to 10 % (cosine): Adam's constant steps would otherwise circle the optimum.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.1 * lr)
    first = last = None
    for _ in range(steps):
        opt.zero_grad()
        params = {**fixed, **{k: u[k] * scales[k] for k in u}}
        value = loss(effect(x, sample_rate, **params), target)
        value.backward()
        opt.step()
        schedule.step()
        last = float(value.detach())
        first = last if first is None else first
    return first, last, {k: float(u[k].detach() * scales[k]) for k in u}
