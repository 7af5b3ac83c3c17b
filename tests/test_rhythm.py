"""The encoder's rhythm features (dmst.encoder.features.rhythm_features) and the models from before them.

The features are checked against the modulation rate of amplitude-modulated noise (the analytic answer), the
migration against settings the code before them predicted (tests/data/v3_default_settings.json), and the
resume of a run from before them against a run that carries on."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dmst import schema
from dmst.encoder import Encoder, load_model
from dmst.encoder.features import N_RHYTHM_FEATURES, SAMPLE_RATE, rhythm_features
from dmst.encoder.model import RHYTHM, read_checkpoint
from dmst.encoder.model import BUNDLED_DIR

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def am_noise(rate_hz: float, seconds: float = 6.0, depth: float = 0.9, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    return (0.1 * torch.randn(t.shape, generator=g, dtype=torch.float64) * (1 + depth * torch.sin(2 * math.pi * rate_hz * t)))[None]


@pytest.mark.parametrize("rate_hz", [1.5, 2.5, 4.0, 7.0])
def test_rhythm_centroid_and_peak_are_the_modulation_rate_in_octaves(rate_hz):
    f = rhythm_features(am_noise(rate_hz))[0]
    want = math.log2(rate_hz / 2.5)
    assert abs(float(f[0]) - want) < 0.05  # the centroid: the noise's own envelope ripple spreads it a little
    assert abs(float(f[1]) - want) < 0.05  # the peak: within a bin (0.1 Hz) of the rate
    assert float(f[2]) > -0.25  # nearly all of the envelope's variance is the modulation (share over -5 dB)


def test_rhythm_of_steady_noise_has_a_small_share_and_silence_is_zero():
    steady = rhythm_features(am_noise(4.0, depth=0.0))[0]
    modulated = rhythm_features(am_noise(4.0))[0]
    # steady noise's 10 ms envelope ripples like white noise over 0-50 Hz: 1-10 Hz holds 9/50 of it (-7.4 dB)
    assert abs(20 * float(steady[2]) - 10 * math.log10(9 / 50)) < 1.0
    assert 20 * float(modulated[2]) > -1.0
    assert torch.equal(rhythm_features(torch.zeros(1, SAMPLE_RATE)), torch.zeros(1, N_RHYTHM_FEATURES))
    assert rhythm_features(torch.zeros(3, 100)).shape == (3, N_RHYTHM_FEATURES)  # too short: zeros, no error


def test_rhythm_weights_get_a_gradient_and_move_the_settings():
    encoder = Encoder(training_start=True)
    x = torch.cat([am_noise(2.0), am_noise(5.0)]).float()
    u = encoder(x)
    u[:, schema.KEYS.index("delay.time_ms")].sum().backward()
    grad = encoder.rhythm.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad[schema.KEYS.index("delay.time_ms")].abs().sum() > 0
    with torch.no_grad():
        encoder.rhythm.weight[schema.KEYS.index("delay.time_ms"), 0] = -1.0  # faster rhythm: shorter delay
        u = encoder(x)
    t = u[:, schema.KEYS.index("delay.time_ms")]
    assert float(t[1]) < float(t[0])


def test_a_model_from_before_the_rhythm_features_predicts_what_it_did():
    """The bundled default.pt has no rhythm.weight; the settings it predicted before the features existed
    (commit ab143da) are predicted again, to float32 precision."""
    assert RHYTHM not in torch.load(BUNDLED_DIR / "default.pt", weights_only=True)["state_dict"]
    assert torch.equal(read_checkpoint(BUNDLED_DIR / "default.pt")["state_dict"][RHYTHM],
                       torch.zeros(schema.NUM_PARAMS, N_RHYTHM_FEATURES))
    x, sr = sf.read(ROOT / "examples" / "sing_me_a_song.wav", dtype="float32", always_2d=True)
    got = load_model("default").predict(x[: 3 * sr].T, sr)
    want = schema.from_json((DATA / "v3_default_settings.json").read_text())
    for key in schema.KEYS:
        g, n = key.split(".")
        assert got[g][n] == pytest.approx(want[g][n], rel=1e-5, abs=1e-6), key


def test_a_run_from_before_the_rhythm_features_resumes(tmp_path):
    """A last.pt written before the encoder had rhythm.weight (its model, optimizer and average without it)
    resumes: the weight joins the network's optimizer group with a fresh state and the average at zero."""
    import train

    rng = np.random.default_rng(0)
    for sub in ("raw", "mixed"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(4):
        x = (0.1 * rng.standard_normal(2 * SAMPLE_RATE) * (1 + 0.8 * np.sin(2 * np.pi * (2 + i) * np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE)))
        sf.write(tmp_path / "data" / "raw" / f"s{i}__a.wav", x.astype(np.float32), SAMPLE_RATE)
        sf.write(tmp_path / "data" / "mixed" / f"s{i}__a.wav", (0.7 * x).astype(np.float32), SAMPLE_RATE)
    run = tmp_path / "run"
    args = ["--data", str(tmp_path / "data"), "--out", str(run), "--batch-size", "2", "--crop-seconds", "1.0",
            "--quiet", "--workers", "1", "--high-pass-slope", "12"]
    assert train.main(args + ["--epochs", "1"]) == 0
    last = torch.load(run / "last.pt", weights_only=True)
    n_params = len(last["optimizer"]["param_groups"][1]["params"])
    last["model"]["state_dict"].pop(RHYTHM)
    last["optimizer"]["param_groups"][1]["params"].pop()  # the rhythm weight is the group's last
    last["optimizer"]["state"].pop(n_params, None)
    last["average"]["average"].pop(RHYTHM)
    last["finished"], last["stop_reason"], last["args"]["epochs"] = False, "", 2
    torch.save(last, run / "last.pt")
    assert train.main(args + ["--epochs", "2", "--resume"]) == 0
    after = torch.load(run / "last.pt", weights_only=True)
    assert after["epoch"] == 2 and RHYTHM in after["model"]["state_dict"] and RHYTHM in after["average"]["average"]
    assert len(after["optimizer"]["param_groups"][1]["params"]) == n_params
    assert json.loads((run / "metrics.json").read_text())["epochs"][-1]["epoch"] == 2
