"""Training and fitting start where every parameter has a gradient (schema.TRAINING_START), and a model that has
not been trained still predicts the defaults.

At the defaults several effects are dead: a send at -60 dB is exactly zero, a de-esser or gate range of 0 dB holds
the gain at 0 dB, the detector blends sit at the sigmoid's flat edge.  The checks here are on gradients through the
whole console (nothing is compared with a copy of the code under test): finite everywhere, and non-zero for every
parameter but one kind, the frequency and Q of an EQ band whose gain starts at 0 dB (the band is then the identity,
so their first gradient is exactly zero by construction); those get theirs once the gains have moved, after one step.
"""
from __future__ import annotations

import torch

from dmst import schema
from dmst.console import render
from dmst.effects import staging_gain_db
from dmst.encoder.model import DmstModel, to_mono_44k
from dmst.encoder.network import Encoder
from dmst.fit import fitting_start
from dmst.losses import MixLoss
from test_console_v3 import SETTING, _clip, _params

FS = 44100


def _take_with_a_transient() -> torch.Tensor:
    """(1, 1, n): 2 s of voice and, in its first pause, a 2 ms full-scale click: a limiter has a gradient only where
    the render goes over its ceiling, and a voice delivered at -16 LUFS rarely reaches -1 dBTP."""
    x = _clip(FS).clone()
    t = torch.arange(int(0.002 * FS)) / FS
    x[0, 0, 2000:2000 + t.numel()] += torch.sin(2 * torch.pi * 1000 * t)
    return x


def _mix(x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return render(x, FS, _params(SETTING), staging_gain_db(x, FS), output_channels=2)


def _identity_bands_at(u: torch.Tensor) -> set[str]:
    """Frequency and Q keys of the EQ bands whose gain is exactly 0 dB at ``u``."""
    values = schema.denormalize(u[None].double())
    out = set()
    for key in schema.KEYS:
        stem, _, tail = key.rpartition("_")
        band = stem.removesuffix("_freq") if tail == "hz" else stem if tail == "q" else None
        if band and band + "_gain_db" in values and float(values[band + "_gain_db"]) == 0.0:
            out.add(key)
    return out


def _check(grad: torch.Tensor, keys) -> None:
    """Finite everywhere; non-zero for every learned key in ``keys`` (a discrete row is chosen, not learned:
    its gradient is exactly zero by design)."""
    assert torch.isfinite(grad).all()
    dead = [k for k, g in zip(schema.KEYS, grad.tolist()) if g == 0 and k in keys and k not in schema.DISCRETE_KEYS]
    assert not dead, f"zero gradient for {dead}"
    assert all(g == 0 for k, g in zip(schema.KEYS, grad.tolist()) if k in schema.DISCRETE_KEYS)


def _checked(step: int, exempt: set[str]) -> set[str]:
    """Step 0: every key but the exempt ones; step 1: the exempt ones (the others may have moved to where they
    rightly have no gradient, e.g. a gate whose curve no longer reaches its range)."""
    return set(schema.KEYS) - exempt if step == 0 else exempt


def test_the_start_is_off_the_dead_zones():
    """Guards the tests below: the sends are on, the de-esser and the gate have a range, the blends are mid-range."""
    start = schema.denormalize(schema.training_start_normalized()[None].double())
    assert float(start["delay.send_db"]) > -59.9 and float(start["reverb.send_db"]) > -59.9
    assert float(start["deesser.range_db"]) > 0 and float(start["gate.range_db"]) > 0
    assert 0 < float(start["compressor.detector_rms"]) < 1 and 0 < float(start["compressor.linear_envelope"]) < 1
    # ... and the defaults are the dead ones (so the start matters)
    assert schema.BY_KEY["delay.send_db"].default == -60 and schema.BY_KEY["deesser.range_db"].default == 0


def test_a_fresh_encoder_starts_training_where_every_parameter_has_a_gradient():
    """A fresh encoder built with training_start=True has its output (its bias, default_logits) at the training start; the MixLoss of its render against a
    mix made with every stage active gives finite, non-zero gradients to every parameter's output (the bias and the
    last layer's bias), and after one Adam step also to the frequencies and Qs of the bands that started at 0 dB."""
    torch.manual_seed(0)
    x = _take_with_a_transient()
    target = _mix(x)
    staging = staging_gain_db(x, FS)
    encoder = Encoder(training_start=True)
    u0 = torch.sigmoid(encoder.default_logits.detach())
    torch.testing.assert_close(u0, schema.training_start_normalized().clamp(1e-3, 1 - 1e-3))
    staged, _ = to_mono_44k(x[0], FS, staging[0])
    loss_fn = MixLoss(FS)
    opt = torch.optim.Adam(encoder.parameters(), lr=0.02)
    exempt = _identity_bands_at(u0)
    assert exempt, "no band starts at 0 dB: the exemption is not needed any more"
    for step in range(2):
        opt.zero_grad()
        u = encoder(staged[None])
        loss_fn(render(x, FS, schema.denormalize(u), staging, output_channels=2), target).backward()
        _check(encoder.default_logits.grad, _checked(step, exempt))
        _check(encoder.head[-1].bias.grad, _checked(step, exempt))
        opt.step()


def test_a_fit_starts_where_every_parameter_has_a_gradient():
    """dmst fit's start (fitting_start: the training start, and the mix's loudness, true peak and echo time) gets
    finite, non-zero gradients for every parameter, and after one step for the bands that started at 0 dB."""
    x = _take_with_a_transient()
    target = _mix(x)[0]
    staging = staging_gain_db(x, FS)
    start, held = fitting_start(x[0], target, FS)
    assert "delay.time_ms" in held  # the mix's echo was found
    logits = torch.log(start.clamp(1e-3, 1 - 1e-3) / (1 - start.clamp(1e-3, 1 - 1e-3)))[None].requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.05)
    loss_fn = MixLoss(FS)
    exempt = _identity_bands_at(start)
    for step in range(2):
        opt.zero_grad()
        loss_fn(render(x, FS, schema.denormalize(torch.sigmoid(logits)), staging, output_channels=2), target[None]).backward()
        _check(logits.grad[0], _checked(step, exempt))
        opt.step()


def test_an_untrained_model_predicts_the_defaults_and_a_trained_one_what_it_learned():
    """A DmstModel of a fresh encoder predicts exactly the defaults where training starts elsewhere (the sends off,
    no de-essing), as a migrated model does; once training has moved a parameter, it predicts the learned value."""
    audio = _clip(FS, 1.0)[0].numpy()
    encoder = Encoder(training_start=True)
    model = DmstModel(encoder)
    assert set(model.fixed_defaults) == set(schema.TRAINING_START)
    params = model.predict(audio, FS)
    for key in schema.TRAINING_START:
        p = schema.BY_KEY[key]
        assert params[p.group][p.name] == p.default, key
    with torch.no_grad():  # as an optimiser step would: the delay send's output moved
        encoder.default_logits[schema.KEYS.index("delay.send_db")] += 0.5
    trained = DmstModel(encoder)
    assert "delay.send_db" not in trained.fixed_defaults
    assert trained.predict(audio, FS)["delay"]["send_db"] > -30.0  # above the -30 dB start: what it learned
