"""The whole console: gradients to every parameter, parameter recovery, and hostile inputs."""
from __future__ import annotations

import math
from pathlib import Path

import auraloss
import numpy as np
import pytest
import soundfile as sf
import torch

from dmst import schema
from dmst.console import AudioError, render
from dmst.effects import staging_gain_db

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FS = 44100


def _voice(start_s: float = 1.0, seconds: float = 1.5) -> torch.Tensor:
    """A (1, 1, n) float32 excerpt of examples/and_its_all.wav."""
    x, sr = sf.read(EXAMPLES / "and_its_all.wav", dtype="float32", always_2d=True)
    assert sr == FS
    x = x[int(start_s * sr): int((start_s + seconds) * sr), 0]
    return torch.from_numpy(np.ascontiguousarray(x))[None, None]


def _mrstft() -> auraloss.freq.MultiResolutionSTFTLoss:
    sizes = [256, 1024, 4096]
    return auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=sizes, hop_sizes=[s // 4 for s in sizes], win_lengths=sizes)


def _params(values: dict, batch: int = 1) -> dict:
    return {k: torch.full((batch,), float(v)) for k, v in values.items()}


V2_GROUPS = ("eq", "compressor", "saturation", "output")
# A clearly non-default vocal chain of the v2 console's parameters, physical units, in schema order; the
# stages v3 added at their defaults (tests/test_console_v3.py sets every stage).
TARGET = {p.key: p.default for p in schema.SCHEMA} | dict(zip([k for k in schema.KEYS if k.split(".")[0] in V2_GROUPS
                                                                 and k not in schema.DISCRETE_KEYS], [
    100.0, 200.0, -3.0,          # high-pass, low shelf freq / gain
    400.0, -4.0, 1.5,            # low-mid
    2000.0, 3.0, 1.0,            # mid
    5000.0, 5.0, 2.0,            # presence
    10000.0, 4.0, 16000.0,       # high shelf freq / gain, low-pass
    -24.0, 4.0, 6.0, 5.0, 80.0, 3.0,   # threshold, ratio, knee, attack, release, make-up
    0.0, 20.0, 0.0, 0.0,         # detector: peak, (RMS window), dB-domain ballistics, feed-forward (the v2 compressor)
    9.0, 0.3, 0.7,               # drive, asymmetry, mix
    -20.0,                       # output loudness (LUFS)
]))


def test_target_setting_is_valid():
    """The recovery target is a valid, non-default setting (guards the test data itself)."""
    schema.validate(schema.nest(TARGET))
    assert sum(TARGET[p.key] != p.default for p in schema.SCHEMA) >= 20


# ---------------------------------------------------------------------------
# (a) gradients
# ---------------------------------------------------------------------------

def test_every_parameter_gets_a_finite_nonzero_gradient():
    """MR-STFT loss through the console: all parameters of both batch items get finite, non-zero grads."""
    x = _voice().expand(2, 1, -1).contiguous()
    x[1] = torch.roll(x[1], 10000, dims=-1)  # two different clips
    staging = staging_gain_db(x, FS)
    # Mid-range settings.  Not exactly 0.5: that puts every EQ gain at 0 dB, where a bell or
    # shelf is the identity and its frequency and Q have an exactly zero gradient.
    u = torch.tensor([[0.55] * schema.NUM_PARAMS, [0.35 + 0.3 * (i % 2) for i in range(schema.NUM_PARAMS)]], requires_grad=True)
    y = render(x, FS, schema.denormalize(u), staging, output_channels=2)  # the sends are on: stereo
    with torch.no_grad():
        target = render(x, FS, _params(TARGET, 2), staging, output_channels=2)
    loss = _mrstft()(y, target)
    loss.backward()
    g = u.grad
    assert g.shape == (2, schema.NUM_PARAMS)
    assert torch.isfinite(g).all()
    # The gate, the de-esser and the limiter act only where the level crosses their thresholds, which
    # mid-range settings need not reach on this clip: tests/test_console_v3.py checks them with settings that do.
    # A discrete row (the high-pass slope) is chosen, not learned: it has no gradient by design.
    checked = [i for i, k in enumerate(schema.KEYS)
               if k.split(".")[0] not in ("gate", "deesser", "limiter") and k not in schema.DISCRETE_KEYS]
    dead = [(b, schema.KEYS[i]) for b in range(2) for i in checked if g[b, i] == 0]
    assert not dead, f"zero gradient for {dead}"


# ---------------------------------------------------------------------------
# (b) recovery
# ---------------------------------------------------------------------------

@pytest.fixture
def one_thread():
    """Run single-threaded: on a shared 2-core machine, OpenMP thread pools (torch's and the
    numba kernels' of torchcomp/torchlpc) spin against other processes and slow a 150-step
    optimisation by 5-10x; one thread is both faster and steadier here."""
    import numba

    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)


def test_optimising_parameters_recovers_a_known_chain(one_thread):
    """From the defaults, Adam on sigmoid logits cuts the MR-STFT loss to a known non-default chain by >= 90 %."""
    torch.manual_seed(0)
    x = _voice()
    staging = staging_gain_db(x, FS)
    with torch.no_grad():
        target = render(x, FS, _params(TARGET), staging, output_channels=2)
    loss_fn = _mrstft()
    u0 = schema.default_normalized()[None].clamp(1e-3, 1 - 1e-3)
    logit = torch.log(u0 / (1 - u0)).requires_grad_(True)
    steps = 150
    opt = torch.optim.Adam([logit], lr=0.08)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.005)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        # Stereo both: from the defaults the sends sit a hair above off (the logits' clamp), which is stereo.
        loss = loss_fn(render(x, FS, schema.denormalize(torch.sigmoid(logit)), staging, output_channels=2), target)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        if history[-1] <= 0.1 * history[0]:  # the bar is reached: no need to run on
            break
    assert all(math.isfinite(v) for v in history)
    drop = 1 - min(history) / history[0]
    assert drop >= 0.90, f"loss fell by only {100 * drop:.1f} % ({history[0]:.3f} -> {min(history):.3f}) in {len(history)} steps"


# ---------------------------------------------------------------------------
# (c) hostile and unusual inputs
# ---------------------------------------------------------------------------

DEFAULTS = {p.key: p.default for p in schema.SCHEMA}


@pytest.mark.parametrize("n", [1, 100, FS])
def test_silence_gives_silence(n):
    """All-zero input (any length, down to one sample) renders to finite zeros."""
    y = render(torch.zeros(1, 2, n), FS, _params(TARGET))
    assert y.shape == (1, 2, n)
    assert torch.isfinite(y).all() and torch.all(y.abs() < 1e-6)


@pytest.mark.parametrize("level", [0.5, -1.0, 1e-6])
def test_dc_gives_finite_output(level):
    """Pure DC (loudness -inf after K-weighting) renders to finite output."""
    y = render(torch.full((1, 1, FS // 2), level), FS, _params(TARGET))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("value", [0.0, 0.7, -1.0])
def test_single_sample_gives_finite_output(value):
    """A one-sample clip renders to one finite sample."""
    y = render(torch.full((1, 1, 1), value), FS, _params(TARGET))
    assert y.shape == (1, 1, 1) and torch.isfinite(y).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_raises_audio_error(bad):
    """A NaN or infinite sample anywhere is refused with AudioError, not rendered."""
    x = _voice(seconds=0.2).clone()
    x[0, 0, 1234] = bad
    with pytest.raises(AudioError):
        render(x, FS, _params(TARGET))


@pytest.mark.parametrize("shape", [(0,), (1, 0), (1, 1, 0), (1, 1, 1, 10)])
def test_wrong_shape_or_empty_raises_audio_error(shape):
    """Empty audio and anything that is not (batch, channels, samples) is refused with AudioError."""
    with pytest.raises(AudioError):
        render(torch.zeros(shape), FS, _params(TARGET))


@pytest.mark.parametrize("fs", [22050, 48000, 96000])
@pytest.mark.parametrize("channels", [1, 2])
def test_any_rate_and_stereo_keep_shape(fs, channels):
    """Other sample rates and stereo render finite audio of the input's shape, at a sane level."""
    t = torch.arange(fs // 2) / fs
    x = torch.stack([0.3 * torch.sin(2 * math.pi * (220 + 110 * c) * t) for c in range(channels)])[None]
    x = x * (1 + 0.5 * torch.sin(2 * math.pi * 3 * t))  # some level movement for the compressor
    for values in (DEFAULTS, TARGET):
        y = render(x, fs, _params(values))
        assert y.shape == x.shape
        assert torch.isfinite(y).all()
        ratio_db = 10 * math.log10(float(y.pow(2).mean() / x.pow(2).mean()))
        assert -20 < ratio_db < 20


def test_batch_items_get_their_own_settings():
    """A batch of 2 with different settings renders each item exactly as rendering it alone (1e-5)."""
    x = torch.cat([_voice(0.5, 1.0), _voice(3.0, 1.0)]).repeat(1, 2, 1)  # (2, 2, n) stereo
    x[:, 1] *= 0.5
    settings = [DEFAULTS, TARGET]
    both = render(x, FS, {k: torch.tensor([s[k] for s in settings]) for k in schema.KEYS})
    assert both.shape == x.shape
    for b, s in enumerate(settings):
        alone = render(x[b: b + 1], FS, _params(s))
        torch.testing.assert_close(both[b: b + 1], alone, rtol=0, atol=1e-5)
    assert (both[0] - both[1]).abs().max() > 1e-2  # and the two settings really differ
