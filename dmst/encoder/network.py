"""The encoder network: a compact CNN on log-mel frames that predicts console settings.

Settings are predicted as offsets from a learned default: the output is
``sigmoid(default_logits + delta(x))`` in the schema's normalised [0, 1] space, with the
last layer initialised to zero, so an untrained network predicts one setting for every
input: the defaults, or with ``training_start=True`` the *training start*, the defaults
except where a default has no gradient (:data:`dmst.schema.TRAINING_START`: the sends off,
the de-esser's and the gate's range at 0 dB, the detector blends at the sigmoid's edge),
which start a little on.  On small
datasets the average setting is a strong baseline (Steinmetz et al., DiffVox, DAFx 2025),
and this parameterisation starts from it instead of from noise.  (A :class:`DmstModel`
wrapping such an untouched encoder still *predicts* the defaults: see
:func:`dmst.encoder.model.untrained_keys`.)

A discrete row of the schema (``eq.high_pass_slope_db``) is not predicted: a sigmoid
has no meaning between 12 and 18 dB/octave, and rounding has no gradient.  The encoder
holds a fixed value for it (``fixed``, recorded in its ``config``, so in the model file;
schema default unless set), and its output column is that value's normalised form.  The
head keeps a row for it so that every column indexes the schema alike.  Training also holds
the limiter's ceiling this way (a delivery spec measured on the mixes, not a style): held, a
value at the top of its range is exactly that value, the limiter off, which no sigmoid reaches.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import schema
from .features import N_BANDS, N_LEVEL_FEATURES, LogMel, band_shares, level_features


# Continuous rows training may hold at a measured value instead of learning them (train.py: the limiter's
# ceiling, at the mixes' loudest true peaks).
LIMITER_CEILING = "limiter.ceiling_dbtp"
HOLDABLE_KEYS: tuple[str, ...] = (LIMITER_CEILING,)


def training_start_logits() -> torch.Tensor:
    """(P,) logits where training starts: the defaults, with :data:`dmst.schema.TRAINING_START` over them.

    Clamped to u in [1e-3, 1 - 1e-3] so no logit is infinite.  A fresh encoder's output bias
    and the rows a migration adds to an older model both start here.
    """
    u0 = schema.training_start_normalized().clamp(1e-3, 1 - 1e-3)
    return torch.log(u0) - torch.log1p(-u0)


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU(), nn.MaxPool2d(2))


class Encoder(nn.Module):
    """(batch, samples) gain-staged mono at 44.1 kHz -> (batch, P) normalised settings in (0, 1)."""

    def __init__(self, width: int = 32, hidden: int = 128, global_only: bool = False, fixed: dict | None = None,
                 training_start: bool = False):
        super().__init__()
        self.config = {"width": width, "hidden": hidden, "global_only": global_only}
        self.global_only = global_only
        mask = torch.tensor([k in schema.DISCRETE_KEYS for k in schema.KEYS])
        self.register_buffer("fixed_mask", mask, persistent=False)
        self.register_buffer("fixed_u", schema.default_normalized(), persistent=False)
        for key, value in {**{k: schema.BY_KEY[k].default for k in schema.DISCRETE_KEYS}, **(fixed or {})}.items():
            self.fix(key, value)
        self.features = LogMel()
        self.cnn = nn.Sequential(_block(1, width // 2), _block(width // 2, width), _block(width, 2 * width), _block(2 * width, 2 * width))
        embed = 4 * width + N_LEVEL_FEATURES
        self.head = nn.Sequential(nn.LayerNorm(embed), nn.Linear(embed, hidden), nn.GELU(), nn.Linear(hidden, schema.NUM_PARAMS))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # The band shares enter the head's hidden layer beside the normalised embedding, through a map started at
        # zero: a model trained before it existed predicts exactly as before until it is trained again.
        self.spectrum = nn.Linear(N_BANDS, hidden)
        nn.init.zeros_(self.spectrum.weight)
        nn.init.zeros_(self.spectrum.bias)
        # training_start: the output bias at the training start rather than the defaults (what dmst train
        # starts a fresh model from; its end step switches off what the mixes do not need: dmst.switches).
        if training_start:
            logits = training_start_logits()
        else:
            u0 = schema.default_normalized().clamp(1e-3, 1 - 1e-3)
            logits = torch.log(u0) - torch.log1p(-u0)
        self.default_logits = nn.Parameter(logits)

    def fix(self, key: str, value: float) -> None:
        """Hold row ``key`` at ``value`` (a discrete row: one of its choices; :data:`HOLDABLE_KEYS`: within its
        range): its output column is that value exactly, with no gradient.  Recorded in ``config``."""
        p = schema.BY_KEY[key]
        if key not in schema.DISCRETE_KEYS + HOLDABLE_KEYS:
            raise ValueError(f"only a discrete row or one of {', '.join(HOLDABLE_KEYS)} is held fixed, not {key}")
        schema.check_value(key, value)
        self.config["fixed"] = {**self.config.get("fixed", {}), key: float(value)}
        i = schema.KEYS.index(key)
        self.fixed_u[i] = p.normalize(float(value))
        self.fixed_mask[i] = True

    @property
    def fixed(self) -> dict[str, float]:
        return dict(self.config.get("fixed", {}))

    def _settings(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.where(self.fixed_mask, self.fixed_u, torch.sigmoid(logits))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, embedding): CNN features pooled over time and frequency, levels, and
        (the last N_BANDS columns) the band shares."""
        mel = self.features(x)
        h = self.cnn(mel)  # (batch, C, mels', frames')
        h = h.mean(dim=2)
        pooled = torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)
        return torch.cat([pooled, level_features(x), band_shares(mel)], dim=-1)

    def head_from_embedding(self, e: torch.Tensor) -> torch.Tensor:
        if self.global_only:
            return self._settings(self.default_logits).expand(e.shape[0], -1)
        norm, first, act, last = self.head
        hidden = first(norm(e[:, :-N_BANDS])) + self.spectrum(e[:, -N_BANDS:])
        return self._settings(self.default_logits + last(act(hidden)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_only:  # one setting for every input: no need to listen
            return self._settings(self.default_logits).expand(x.shape[0], -1)
        return self.head_from_embedding(self.embed(x))
