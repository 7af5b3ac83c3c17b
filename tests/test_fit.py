"""dmst fit: per-song settings, found by optimising the console directly, re-create a known mix."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dmst import schema
from dmst.cli import main as dmst_main
from dmst.console import render
from dmst.metrics import mrstft_distance

ROOT = Path(__file__).resolve().parents[1]


def test_fit_recreates_a_known_mix_through_the_cli(tmp_path):
    """fit RAW MIXED -o P.json, then render RAW --params P.json: much closer to the mix than the raw is, and the JSON is valid."""
    x, sr = sf.read(ROOT / "examples" / "sing_me_a_song.wav", dtype="float32", always_2d=True)
    x = x[: int(1.0 * sr)]
    target = schema.default_dict()
    target["eq"].update(presence_gain_db=6.0, high_pass_freq_hz=150.0)
    target["compressor"].update(threshold_db=-30.0, ratio=5.0)
    target["output"]["loudness_lufs"] = -13.0
    with torch.no_grad():
        mixed = render(torch.from_numpy(x.T.copy())[None], sr, schema.stack([target]))[0].T.numpy()
    raw_path, mix_path, params_path, out_path = (tmp_path / n for n in ("raw.wav", "mix.wav", "p.json", "out.wav"))
    sf.write(raw_path, x, sr, subtype="FLOAT")
    sf.write(mix_path, mixed, sr, subtype="FLOAT")

    assert dmst_main(["fit", str(raw_path), str(mix_path), "-o", str(params_path), "--steps", "50"]) == 0
    doc = json.loads(params_path.read_text())
    assert doc["meta"]["offset_ms"] == 0.0 and set(schema.GROUPS) <= set(doc)
    assert dmst_main(["render", str(raw_path), "--params", str(params_path), "-o", str(out_path), "--bit-depth", "32f"]) == 0

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a.T))[None]

    rendered, _ = sf.read(out_path, dtype="float32", always_2d=True)
    before, after = mrstft_distance(t(x), t(mixed)), mrstft_distance(t(rendered), t(mixed))
    assert after < 0.35 * before, (before, after)


def test_a_long_song_is_fitted_on_excerpts_and_its_loudness_solved_on_the_whole(tmp_path):
    """Over 20 s, fit_params works on short excerpts (a fixed cost per step); the whole song still lands on the
    mix's loudness, measured by an independent meter (scipy K-weighting at 48 kHz, BS.1770-4 gates)."""
    from dmst.fit import WHOLE_SECONDS, excerpt_pool, fit_params
    from test_catalogue import reference_lufs

    sr = 44100
    x, _ = sf.read(ROOT / "examples" / "audioflux_voice.wav", dtype="float32", always_2d=True)
    raw = torch.from_numpy(np.tile(x[:, 0], 3)[None].copy())  # 24 s
    assert raw.shape[-1] > WHOLE_SECONDS * sr
    target = schema.default_dict()
    target["eq"]["presence_gain_db"] = 6.0
    target["output"]["loudness_lufs"] = -13.0
    with torch.no_grad():
        mixed = render(raw[None], sr, schema.stack([target]))[0]
    stereo = torch.cat([mixed, 0.7 * mixed])
    raw_x, mix_x = excerpt_pool(raw, stereo, sr)
    assert raw_x.shape == (24, 1, int(1.5 * sr)) and mix_x.shape == (24, 2, int(1.5 * sr))
    params, loss = fit_params(raw, stereo, sr, steps=8)
    with torch.no_grad():
        y = render(raw.repeat(2, 1)[None], sr, schema.stack([params]))[0]
    assert reference_lufs(y.numpy(), sr) == pytest.approx(reference_lufs(stereo.numpy(), sr), abs=0.1)
    assert params["eq"]["presence_gain_db"] > 0.3  # moving towards the +6 dB that made the mix
