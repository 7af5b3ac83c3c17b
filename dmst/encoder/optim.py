"""The optimiser of a dmst encoder: AdamW, with the learned default setting stepped in the normalised [0, 1] space.

The encoder predicts ``sigmoid(default_logits + delta(x))`` (:mod:`dmst.encoder.network`).  Adam moves each
parameter by about its learning rate a step, whatever the size of its gradient (Kingma & Ba, ICLR 2015, section
2.1).  On a logit that is a fixed step in logit units, and a setting the start model holds near the edge of its
range barely moves: saturation drive at u = 0.002 (0.05 dB of 24) is a logit of -6.2, and reaching u = 0.2
(5 dB) takes about 500 steps at lr 1e-2, where a fine-tune on 50 pairs makes 170.  Stepped in u instead, the same
learning rate moves the setting the same fraction of its range a step, at the edge as in the middle.

A group flagged ``unit_space=True`` holds such logits (``z``, with ``u = sigmoid(z)``): its gradient is taken in u
by the chain rule (``dL/du = dL/dz / (u (1 - u))``), Adam's moments are kept in u, and the new u is written back as a
logit.  No entry is stepped out past ``UNIT_MARGIN`` of an edge unless it was already there, and an entry whose
gradient is exactly zero (a discrete row, an effect held off) stays bit for bit.  Other groups are plain AdamW.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

UNIT_MARGIN = 1e-3  # as the training start's logits are clamped (dmst.encoder.network.training_start_logits)


class UnitSpaceAdamW(torch.optim.AdamW):
    """:class:`torch.optim.AdamW`; param groups with ``unit_space=True`` are Adam steps on ``sigmoid(param)``
    (no weight decay in them).  Their state uses AdamW's names (``step``, ``exp_avg``, ``exp_avg_sq``)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        for group in groups:
            if group.get("unit_space"):
                for p in group["params"]:
                    if p.grad is not None:
                        self._unit_step(p, group)
        try:  # the other groups: AdamW's own step
            self.param_groups = [g for g in groups if not g.get("unit_space")]
            super().step()
        finally:
            self.param_groups = groups
        return loss

    def _unit_step(self, p: torch.Tensor, group: dict) -> None:
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        z = p.detach().double()
        u = torch.sigmoid(z)
        # the chain rule; 1e-12 keeps a gradient at a logit of -30 finite (Adam's step does not depend on its size)
        grad = p.grad.double() / (u * (1 - u)).clamp_min(1e-12)
        state["step"] += 1
        t = float(state["step"])
        exp_avg = state["exp_avg"].double().mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq = state["exp_avg_sq"].double().mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        state["exp_avg"].copy_(exp_avg)  # kept in the parameter's dtype, so a resumed run steps the same
        state["exp_avg_sq"].copy_(exp_avg_sq)
        exp_avg, exp_avg_sq = state["exp_avg"].double(), state["exp_avg_sq"].double()
        step = group["lr"] * (exp_avg / (1 - beta1 ** t)) / ((exp_avg_sq / (1 - beta2 ** t)).sqrt() + group["eps"])
        lower = torch.clamp(u, max=UNIT_MARGIN)  # never pushed further out than the margin, or than it was
        upper = torch.clamp(u, min=1 - UNIT_MARGIN)
        new_u = torch.minimum(torch.maximum(u - step, lower), upper)
        moved = (step != 0) & (new_u != u)
        p.copy_(torch.where(moved, torch.log(new_u) - torch.log1p(-new_u), z).to(p.dtype))


class WeightAverage:
    """An exponential moving average of a module's parameters: the weights a run validates and saves.

    Averaging the iterates of a noisy descent gives a better estimate than the last of them (Polyak & Juditsky,
    "Acceleration of stochastic approximation by averaging", SIAM J. Control Optim. 1992); an exponential average
    keeps following the descent (as in Izmailov et al., "Averaging weights leads to wider optima", UAI 2018).
    A fine-tune on 50 pairs makes 6 steps an epoch from batches of 8 five-second crops, and its last weights swing
    the validation loss by 0.1-0.2 from one epoch to the next: the average is what is kept.

    ``half_life_steps``: after that many steps an iterate weighs half as much.  Until ``1 / (n + 1)`` is smaller
    than ``1 - decay`` the n-th update takes the plain mean of the start weights and the n iterates, so the early
    average does not lean on the start.  An entry that does not change (a held row) stays bit for bit.
    """

    def __init__(self, module: torch.nn.Module, half_life_steps: float):
        if not half_life_steps > 0:
            raise ValueError(f"half_life_steps must be > 0, got {half_life_steps}")
        self.decay = 0.5 ** (1.0 / half_life_steps)
        self.updates = 0
        # the parameters that train (one frozen, requires_grad False, is not averaged: it does not move)
        self.average = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        weight = max(1.0 - self.decay, 1.0 / (self.updates + 1))
        for n, p in module.named_parameters():
            if n in self.average:
                self.average[n].lerp_(p.detach(), weight)  # a + w (p - a): exactly a where p == a

    @contextmanager
    def applied(self, module: torch.nn.Module):
        """The module holds the averaged weights inside the block, its own again after it."""
        own = {n: p.detach().clone() for n, p in module.named_parameters() if n in self.average}
        with torch.no_grad():
            for n, p in module.named_parameters():
                if n in self.average:
                    p.copy_(self.average[n])
        try:
            yield module
        finally:
            with torch.no_grad():
                for n, p in module.named_parameters():
                    if n in own:
                        p.copy_(own[n])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": {n: a.clone() for n, a in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["average"]) != set(self.average):
            raise ValueError("the saved weight average is of another network")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for n, a in state["average"].items():
            self.average[n].copy_(a)
