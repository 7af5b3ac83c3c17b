"""Switching off the effects a setting does not need: the end step of ``dmst fit`` and of ``dmst train``.

At their defaults the sends, the de-esser and the gate are off and have no gradient (a send at
-60 dB is exactly zero, a range of 0 dB holds the gain at 0 dB), so fitting and training start
them a little on (:data:`dmst.schema.TRAINING_START`).  Descent then turns down what the mixes do
not have, but rarely all the way to off: a reverb left at -45 dB buys a loss a hair lower on noise
and makes a dry vocal stereo with a tail.  So at the end each of them is tried off, in
:data:`SWITCHES` order, and stays off where that costs less than :data:`TOLERANCE` of the loss
(relative to the loss with what is already switched off): an effect has to earn its place.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from . import schema

# The effects whose default is off, exactly (a bypass), and which fitting and training start a little on.
SWITCHES: tuple[str, ...] = ("delay.send_db", "reverb.send_db", "deesser.range_db", "gate.range_db")
TOLERANCE = 0.005  # an effect that lowers the loss by less than 0.5 % is not worth having on


def pin_defaults(u: torch.Tensor, keys: Iterable[str]) -> torch.Tensor:
    """(batch, P) or (P,) normalised settings with the columns of ``keys`` at their defaults (a switch: off).

    A copy when there is anything to pin (the input is left as it is), the input itself otherwise.  Pinned
    columns carry no gradient.
    """
    keys = tuple(keys)
    if not keys:
        return u
    u = u.clone()
    for key in keys:
        p = schema.BY_KEY[key]
        u[..., schema.KEYS.index(key)] = p.normalize(p.default)
    return u


@torch.no_grad()
def switch_off(loss_with_off: Callable[[tuple[str, ...]], float], candidates: Iterable[str] = SWITCHES,
               tolerance: float = TOLERANCE) -> tuple[tuple[str, ...], dict[str, float]]:
    """The candidates worth switching off, in order, and the relative loss change each cost when it was tried.

    ``loss_with_off(keys)``: the loss with the effects ``keys`` off (their rows at the defaults), everything
    else as it is.  Greedy, one effect at a time in ``candidates`` order: an effect is switched off when the
    loss with it off (and those before it already off) is at most ``(1 + tolerance)`` times the loss without
    switching it off; a negative change means the loss was lower without it.
    """
    off: list[str] = []
    current = float(loss_with_off(()))
    changes = {}
    for key in candidates:
        trial = float(loss_with_off(tuple(off) + (key,)))
        changes[key] = trial / current - 1 if current > 0 else 0.0
        if trial <= (1 + tolerance) * current:
            off.append(key)
            current = trial
    return tuple(off), changes
