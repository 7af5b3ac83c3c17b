"""The compressor's detector families against independent references and measured step responses.

References written out here in numpy, not taken from the code under test:

* the linear-envelope family is JUCE's design (``juce::dsp::BallisticsFilter`` in peak
  mode feeding ``juce::dsp::Compressor``'s hard-knee gain), which pedalboard's
  ``Compressor`` wraps: ``env = x + cte (env - x)`` with ``cte = exp(-2 pi 1000 / (ms fs))``
  for the attack while ``|x| > env`` and for the release otherwise, then
  ``gain = (env / threshold) ** (1 / ratio - 1)`` above the threshold.  JUCE's ms is a
  time constant of ms / (2 pi); dmst's attack_ms is the time constant itself.
* the RMS detector is a one-pole mean square (Giannoulis, Massberg & Reiss, JAES 2012).
* time constants are measured on step responses (63.2 % = 1 - 1/e of the step).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dmst import schema
from dmst.console import render
from dmst.effects import compressor
from dmst.effects.compressor import detector_level_db

FS = 44100
DATA = Path(__file__).resolve().parent / "data"
V2_MODEL = DATA / "v2_model.pt"  # the model dmst bundled until its v3 retrain: a schema-2 checkpoint


def juce_compressor(x: np.ndarray, fs, threshold_db, ratio, attack_ms, release_ms) -> np.ndarray:
    """JUCE dsp::Compressor (peak BallisticsFilter, hard knee) on mono x, plain Python, float64."""
    cte_at = math.exp(-2 * math.pi * 1000.0 / fs / attack_ms)
    cte_rl = math.exp(-2 * math.pi * 1000.0 / fs / release_ms)
    thr = 10 ** (threshold_db / 20)
    env, out = 0.0, np.empty_like(x, dtype=float)
    for t, v in enumerate(np.abs(x).tolist()):
        env = v + (cte_at if v > env else cte_rl) * (env - v)
        out[t] = 1.0 if env < thr else (env / thr) ** (1 / ratio - 1)
    return x * out


def _signal(n=FS // 2, seed=0):
    rng = np.random.default_rng(seed)
    env = np.repeat(rng.uniform(0.01, 0.9, n // 1000 + 1), 1000)[:n]  # level jumps every 23 ms
    return rng.standard_normal(n) * env * 0.5


def _comp(x, **kw):
    base = dict(threshold_db=-20.0, ratio=4.0, knee_db=0.0, attack_ms=1.0, release_ms=50.0, makeup_gain_db=0.0)
    base.update(kw)
    return compressor(x, FS, **base, return_gain=True)


@pytest.mark.parametrize("attack,release", [(6.0, 90.0), (0.5, 20.0), (30.0, 400.0)])
def test_linear_envelope_family_equals_a_numpy_juce_compressor(attack, release):
    """linear_envelope 1, peak, hard knee, times / 2 pi: JUCE's compressor written out in numpy, to 1e-9 (render and training paths)."""
    x = _signal()
    want = juce_compressor(x, FS, -20.0, 4.0, attack, release)
    xt = torch.from_numpy(x)[None, None]
    kw = dict(attack_ms=attack / (2 * math.pi), release_ms=release / (2 * math.pi), linear_envelope=1.0)
    with torch.no_grad():
        y, _ = _comp(xt, **kw)
    np.testing.assert_allclose(y[0, 0].numpy(), want, rtol=0, atol=1e-9)
    y_train, _ = _comp(xt.clone().requires_grad_(), **kw)
    np.testing.assert_allclose(y_train[0, 0].detach().numpy(), want, rtol=0, atol=1e-9)
    assert np.abs(want - x).max() > 0.05  # it really compresses


def test_linear_envelope_family_matches_pedalboard_if_installed():
    """pedalboard.Compressor (JUCE) at nominal 6/90 ms = dmst's linear family at 6/(2 pi), 90/(2 pi) ms: within -90 dB."""
    pedalboard = pytest.importorskip("pedalboard")
    x = _signal(seed=1).astype(np.float32)
    want = pedalboard.Compressor(threshold_db=-24, ratio=3, attack_ms=6, release_ms=90)(x[None], FS)[0]
    with torch.no_grad():
        y, _ = _comp(torch.from_numpy(x.astype(np.float64))[None, None], threshold_db=-24.0, ratio=3.0,
                     attack_ms=6 / (2 * math.pi), release_ms=90 / (2 * math.pi), linear_envelope=1.0)
    err = y[0, 0].numpy() - want
    assert 20 * math.log10(np.sqrt(np.mean(err ** 2)) / np.sqrt(np.mean(want ** 2))) < -90


def _dc_steps(lo, hi, n_pre, n_hi, n_post):
    return np.concatenate([np.full(n_pre, lo), np.full(n_hi, hi), np.full(n_post, lo)])


def _crossing(v, start, target, rising):
    """Seconds from the last sample before the step (``start - 1``: no update yet) to the interpolated crossing."""
    seg = v[start - 1:]
    hit = np.nonzero(seg >= target if rising else seg <= target)[0][0]
    v0, v1 = seg[hit - 1], seg[hit]
    return (hit - 1 + (target - v0) / (v1 - v0)) / FS


@pytest.mark.parametrize("detector_rms", [0.0, 1.0])
def test_linear_envelope_attack_and_release_are_63_percent_times_of_the_envelope(detector_rms):
    """Level step 0.01 -> 0.5 -> 0.01, everything above a -80 dB threshold, ratio 2: the envelope recovered from the
    applied gain covers 63.2 % of the step up in attack_ms and of the step down in release_ms, within 2 % (plus the
    2 ms lag of the RMS detector's 1 ms window)."""
    pairs = [(1.0, 30.0), (10.0, 150.0), (40.0, 600.0)]
    x = _dc_steps(0.01, 0.5, FS // 2, 3 * FS // 2, 4 * FS)
    xb = torch.from_numpy(np.broadcast_to(x, (len(pairs), 1, x.size)).copy())
    with torch.no_grad():
        _, g = _comp(xb, threshold_db=-80.0, ratio=2.0, attack_ms=[a for a, _ in pairs], release_ms=[r for _, r in pairs],
                     linear_envelope=1.0, detector_rms=detector_rms, rms_window_ms=1.0)
    up, down = FS // 2, FS // 2 + 3 * FS // 2
    for i, (a_ms, r_ms) in enumerate(pairs):
        env = 10 ** ((-80.0 - 2 * g[i].numpy()) / 20)  # gain = (1/2 - 1)(env_dB - T)  =>  env_dB = T - 2 gain
        lo, hi = env[up - 10], env[down - 10]
        assert hi == pytest.approx(0.5, rel=1e-3) and lo == pytest.approx(0.01, rel=1e-3)
        attack = _crossing(env, up, lo + 0.632 * (hi - lo), rising=True)
        release = _crossing(env, down, hi + 0.632 * (env[-1] - hi), rising=False)
        lag = 2.0 if detector_rms else 0.0  # the RMS level (square root of a 1 ms mean square) lags by up to 2 ms
        assert a_ms * 0.98 < attack * 1000 < a_ms * 1.02 + lag, f"attack {attack * 1000:.3f} ms for {a_ms} ms"
        assert r_ms * 0.98 < release * 1000 < r_ms * 1.02 + lag, f"release {release * 1000:.2f} ms for {r_ms} ms"


@pytest.mark.parametrize("window_ms", [2.0, 20.0, 200.0])
def test_rms_detector_mean_square_covers_63_percent_of_a_step_in_rms_window_ms(window_ms):
    """detector_rms 1: 10**(level/10) (the mean square) steps 0.01 -> 0.25 with a 63.2 % time of rms_window_ms, within 1 %."""
    n = int(12 * window_ms * FS / 1000) + 1000  # 12 time constants: settled to 1e-5
    x = _dc_steps(0.1, 0.5, n, n, 10)
    level = detector_level_db(torch.from_numpy(x)[None, None], FS, torch.tensor([1.0]), torch.tensor([window_ms]))[0].numpy()
    ms = 10 ** (level / 10)
    assert ms[n - 1] == pytest.approx(0.01, rel=1e-4)
    t = _crossing(ms, n, 0.01 + 0.632 * (0.25 - 0.01), rising=True)
    assert abs(t * 1000 - window_ms) < 0.01 * window_ms


def test_rms_detector_reads_a_sine_3_db_under_its_peak_and_blends_in_db():
    """Steady sine: the RMS level is the peak level - 3.01 dB (within 0.1 dB with a 20 ms window); detector_rms 0.25 sits a quarter of the way."""
    t = np.arange(FS) / FS
    x = torch.from_numpy(0.5 * np.sin(2 * np.pi * 440 * t))[None, None]
    levels = detector_level_db(x.expand(3, 1, -1), FS, torch.tensor([0.0, 1.0, 0.25]), torch.tensor([20.0, 20.0, 20.0]))
    settled = slice(FS // 2, FS)
    rms = levels[1, settled].mean().item()
    assert rms == pytest.approx(20 * math.log10(0.5) - 10 * math.log10(2), abs=0.1)
    blend = levels[2, settled] - (0.75 * levels[0, settled] + 0.25 * levels[1, settled])
    assert float(blend.abs().max()) < 1e-9


def test_rms_detector_compresses_a_sine_by_the_static_curve_at_its_rms_level():
    """RMS detector, dB ballistics, slow release: a steady sine's gain reduction is the hard-knee curve at its RMS level (0.3 dB)."""
    t = np.arange(FS) / FS
    x = torch.from_numpy(10 ** (-10 / 20) * np.sin(2 * np.pi * 1000 * t))[None, None]
    with torch.no_grad():
        y, _ = _comp(x, threshold_db=-30.0, ratio=4.0, attack_ms=5.0, release_ms=800.0, detector_rms=1.0, rms_window_ms=10.0)
    s = slice(FS // 2, FS)
    measured = 10 * math.log10(float((y[0, 0, s] ** 2).mean() / (x[0, 0, s] ** 2).mean()))
    rms_level = -10 - 10 * math.log10(2)
    assert measured == pytest.approx((1 / 4 - 1) * (rms_level + 30), abs=0.3)


def test_family_blends_render_path_equals_training_path():
    """Random blends of detector and domain: the compiled render path equals torchcomp's differentiable path (1e-4 dB gain)."""
    torch.manual_seed(5)
    x = (torch.randn(3, 2, 20000) * torch.linspace(0.02, 0.8, 20000)).to(torch.float32)
    args = dict(threshold_db=torch.tensor([-30.0, -18.0, -24.0]), ratio=torch.tensor([4.0, 2.0, 8.0]),
                knee_db=torch.tensor([6.0, 0.0, 12.0]), attack_ms=torch.tensor([5.0, 0.3, 20.0]),
                release_ms=torch.tensor([100.0, 40.0, 300.0]), makeup_gain_db=torch.tensor([3.0, 0.0, 1.0]),
                detector_rms=torch.tensor([0.3, 1.0, 0.0]), rms_window_ms=torch.tensor([5.0, 30.0, 20.0]),
                linear_envelope=torch.tensor([0.6, 0.0, 1.0]))
    with torch.no_grad():
        y_r, g_r = compressor(x, FS, **args, return_gain=True)
    grad_args = {k: v.clone().requires_grad_() for k, v in args.items()}
    y_t, g_t = compressor(x, FS, **grad_args, return_gain=True)
    assert torch.allclose(g_r, g_t.detach(), atol=1e-4)
    assert float(g_r.abs().max()) > 6
    g_t.sum().backward()
    for k in ("detector_rms", "rms_window_ms", "linear_envelope"):  # the new controls are learnable
        assert torch.isfinite(grad_args[k].grad).all() and float(grad_args[k].grad.abs().max()) > 0, k


def test_compiled_one_pole_equals_a_plain_python_loop_and_torchcomp():
    from torchcomp import compressor_core

    from dmst.effects._ballistics import one_pole

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3000)).cumsum(axis=1)
    falling, rising = np.array([0.5, 0.01, 0.001]), np.array([0.05, 0.3, 0.001])
    want = np.empty_like(x)
    for b in range(3):
        y = 0.0
        for t, f in enumerate(x[b].tolist()):
            c = falling[b] if f < y else rising[b]
            y = y * (1 - c) + c * f
            want[b, t] = y
    got = one_pole(torch.from_numpy(x), torch.from_numpy(falling), torch.from_numpy(rising)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    tc = compressor_core(torch.from_numpy(x), torch.zeros(3, dtype=torch.float64), torch.from_numpy(falling),
                         torch.from_numpy(rising)).numpy()
    np.testing.assert_allclose(got, tc, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# schema v3: old settings and the old model render as they did
# ---------------------------------------------------------------------------

def _v2_settings():
    return json.loads((DATA / "v2_settings.json").read_text())


def test_v2_settings_json_is_migrated_with_the_new_parameters_at_their_defaults():
    """Every parameter v3 added gets its default, except the limiter: v2 had none, so it is off (0 dBTP)."""
    doc = _v2_settings()
    assert doc["schema_version"] == 2 and "detector_rms" not in doc["compressor"]
    params = schema.from_json(json.dumps(doc))
    assert params["limiter"]["ceiling_dbtp"] == schema.LIMITER_OFF_DBTP == schema.BY_KEY["limiter.ceiling_dbtp"].maximum
    for key in schema.ADDED_IN[3]:
        group, name = key.split(".")
        if key != "limiter.ceiling_dbtp":
            assert params[group][name] == schema.BY_KEY[key].default
    for group, values in doc.items():
        if group in schema.GROUPS:
            assert all(params[group][n] == v for n, v in values.items())  # the file's values are kept exactly


@pytest.mark.parametrize("version", [1, 4, "2", None])
def test_unreadable_schema_versions_are_refused_with_the_readable_range(version):
    doc = _v2_settings()
    doc["schema_version"] = version
    with pytest.raises(schema.ParamError, match="reads versions 2 to 3"):
        schema.from_json(json.dumps(doc))


def test_v2_settings_render_as_the_v2_console_did():
    """tests/data/v2_render.npy was rendered by the v2 code (commit f780d6c) from v2_settings.json; the migrated file renders the same."""
    import soundfile as sf

    x, sr = sf.read(Path(__file__).resolve().parents[1] / "examples" / "sing_me_a_song.wav", dtype="float32", always_2d=True)
    x = torch.from_numpy(x[:sr].T.copy())
    with torch.no_grad():
        y = render(x[None], sr, schema.stack([schema.from_json((DATA / "v2_settings.json").read_text())]))[0]
    want = np.load(DATA / "v2_render.npy")
    np.testing.assert_allclose(y.numpy(), want, rtol=0, atol=2e-6)  # 0.001 of RMS blend alone moves it by ~1e-4


def test_the_old_bundled_v2_model_is_migrated_and_predicts_the_v2_settings_exactly():
    """The model dmst bundled until its v3 retrain (schema 2 on disk) loads, predicts what v2 predicted (float32
    precision) and the new parameters at exactly their defaults; its trainable encoder keeps the new rows live,
    from their training start."""
    import soundfile as sf

    from dmst.encoder import load_model, read_checkpoint

    assert torch.load(V2_MODEL, weights_only=True)["schema_version"] == 2
    ckpt = read_checkpoint(V2_MODEL)
    assert ckpt["schema_version"] == schema.SCHEMA_VERSION and ckpt["migrated"]["defaults"] == list(schema.added_since(2))
    model = load_model(V2_MODEL)
    x, sr = sf.read(Path(__file__).resolve().parents[1] / "examples" / "sing_me_a_song.wav", dtype="float32", always_2d=True)
    got = model.predict(x[:sr].T, sr)
    old = schema.from_json((DATA / "v2_settings.json").read_text())
    for key in schema.KEYS:
        g, n = key.split(".")
        if key in schema.ADDED_IN[3]:
            assert got[g][n] == schema.BY_KEY[key].default
        else:
            assert got[g][n] == pytest.approx(old[g][n], rel=1e-5, abs=1e-5), key
    assert model.encoder.head[-1].weight.shape[0] == schema.NUM_PARAMS
    assert model.encoder.head[-1].weight.requires_grad
    # the trainable encoder starts the blends mid-range (schema.TRAINING_START), not at the sigmoid's flat edge
    u = torch.sigmoid(model.encoder.default_logits.detach())
    for key, start in schema.TRAINING_START.items():
        assert float(u[schema.KEYS.index(key)]) == pytest.approx(start)
    assert float(u[schema.KEYS.index("compressor.rms_window_ms")]) == pytest.approx(
        schema.BY_KEY["compressor.rms_window_ms"].normalize(20.0), abs=1e-6)


@pytest.mark.parametrize("which", ["bundled", "v2"])
def test_model_trained_with_other_ranges_is_refused(which):
    """The bundled (schema 3) model and the old v2 one, with a range or a row of their schema changed."""
    from dmst.encoder import ModelError, model_from_checkpoint
    from dmst.encoder.model import migrate_checkpoint, resolve_model_path

    path = resolve_model_path("default") if which == "bundled" else V2_MODEL
    ckpt = torch.load(path, weights_only=True)
    ckpt["schema"] = [dict(r) for r in ckpt["schema"]]
    row = next(r for r in ckpt["schema"] if (r["group"], r["name"]) == ("eq", "high_pass_freq_hz"))
    row["maximum"] = 800.0
    with pytest.raises(ModelError, match="eq.high_pass_freq_hz in 16..800"):
        migrate_checkpoint(ckpt)
    ckpt = torch.load(path, weights_only=True)
    ckpt["schema"] = ckpt["schema"][:-1]
    with pytest.raises(ModelError, match="another parameter schema"):
        model_from_checkpoint(ckpt)
