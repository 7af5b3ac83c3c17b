"""The encoder's band shares (the take's long-term average spectrum): what they measure, that a model made before
them predicts as before, and that training learns their map, also after resuming a run started without it."""
import math

import numpy as np
import torch

import train
from dmst.encoder import load_model, read_checkpoint
from dmst.encoder.features import N_BANDS, N_MELS, SAMPLE_RATE, LogMel, band_shares
from dmst.encoder.model import resolve_model_path
from test_train import FAST, make_pairs


# The HTK mel scale (torchaudio's default) from 30 Hz to 20 kHz: N_MELS + 2 points equally spaced, mel bin i centred
# on point i + 1, band k the bins 4k .. 4k + 3.
_MEL = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
_POINTS = np.linspace(_MEL(30.0), _MEL(20000.0), N_MELS + 2)


def _band_of(freq_hz: float) -> int:
    return int(np.argmin(np.abs(_POINTS[1:-1] - _MEL(freq_hz)))) // (N_MELS // N_BANDS)


def _centre_of(band: int) -> float:
    """The frequency halfway (in mel) between the band's second and third bins: far from its edges."""
    m = (_POINTS[4 * band + 2] + _POINTS[4 * band + 3]) / 2
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def _shares_db(x: np.ndarray) -> np.ndarray:
    return band_shares(LogMel()(torch.from_numpy(x).float()[None]))[0].numpy() * 20.0


def _sine(freq_hz: float, db: float = -20.0, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return 10 ** (db / 20) * math.sqrt(2) * np.sin(2 * np.pi * freq_hz * t)


def test_a_sine_puts_its_power_in_the_band_that_holds_its_frequency():
    for freq in (_centre_of(2), _centre_of(6), _centre_of(10), _centre_of(13)):
        shares = _shares_db(_sine(freq))
        assert int(np.argmax(shares)) == _band_of(freq), (freq, shares.round(1))
        assert shares.max() > -1.0, (freq, shares.max())  # at least 80 % of the power


def test_band_shares_read_the_balance_not_the_level():
    """Two sines 10 dB apart, in bands far from each other: their bands' shares differ by 10 dB; 12 dB more gain
    changes nothing."""
    low, high = 3, 12
    x = _sine(_centre_of(low), -20.0) + _sine(_centre_of(high), -30.0)
    shares = _shares_db(x)
    assert abs((shares[low] - shares[high]) - 10.0) < 0.5, shares.round(2)
    assert np.allclose(_shares_db(x * 10 ** (12 / 20)), shares, atol=1e-3)


def test_a_model_made_before_the_band_shares_migrates_with_their_map_at_zero():
    """The bundled model was trained before the band shares: it loads with their map at zero, so its predictions
    are those of the network it was trained as (tests/test_compressor_families.py checks the old v2 model's
    settings exactly)."""
    raw = torch.load(resolve_model_path("default"), map_location="cpu", weights_only=True)
    assert "spectrum.weight" not in raw["state_dict"]
    state = read_checkpoint(resolve_model_path("default"))["state_dict"]
    assert not state["spectrum.weight"].any() and not state["spectrum.bias"].any()
    x = torch.from_numpy(_sine(1000.0, -20.0, 5.0)).float()[None]
    model = load_model("default")
    before = model.predict_normalized(x, SAMPLE_RATE)
    with torch.no_grad():  # the map is live: a non-zero map changes the prediction
        model.encoder.spectrum.bias.fill_(0.5)
    assert not torch.equal(model.predict_normalized(x, SAMPLE_RATE), before)


def test_fine_tuning_learns_the_map_and_a_run_started_before_it_resumes_with_it_at_zero(tmp_path):
    """A fine-tune from the bundled model learns the map (finite, not zero).  A last.pt written before the map
    existed (its model, optimiser and average without it) resumes: the rest of the network trains on, the map
    stays at zero."""
    data = make_pairs(tmp_path / "data")
    out = tmp_path / "run"
    args = ["--data", str(data), "--out", str(out), "--epochs", "2", "--init", "default", *FAST]
    assert train.main(args) == 0
    learned = read_checkpoint(out / "model.pt")["state_dict"]["spectrum.weight"]
    assert torch.isfinite(learned).all() and learned.abs().max() > 0
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    # back to the end of epoch 1, as the older dmst saved it: the map's two tensors are the last of the network's group
    last.update(epoch=1, finished=False, history=last["history"][:1])
    last.pop("stop_reason", None)
    state = last["model"]["state_dict"]
    for key in ("spectrum.weight", "spectrum.bias"):
        state.pop(key)
        last["average"]["average"].pop(key)
    group = last["optimizer"]["param_groups"][1]
    for pid in group["params"][-2:]:
        last["optimizer"]["state"].pop(pid, None)
    group["params"] = group["params"][:-2]
    torch.save(last, out / "last.pt")
    before = {k: v.clone() for k, v in state.items()}
    (out / "model.pt").unlink()

    assert train.main(args + ["--resume"]) == 0
    after = read_checkpoint(out / "model.pt")["state_dict"]
    assert not after["spectrum.weight"].any() and not after["spectrum.bias"].any()
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("head."))
