"""Training pairs on disk: matching, checking, alignment (dmst.data)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from dmst import console, data, schema
from dmst.data import AlignedPair, DataError
from dmst.effects.gain import integrated_loudness
from dmst.house_style import mix

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SR = 44100
DELAY_MS = 25.0


def load(name: str) -> torch.Tensor:
    x, sr = sf.read(EXAMPLES / name, dtype="float32", always_2d=True)
    assert sr == SR
    return torch.from_numpy(x.T.copy())


def fractional_delay(x: torch.Tensor, ms: float, sr: int) -> torch.Tensor:
    """Delay (ch, n) by exactly ``ms`` (band-limited, any fraction of a sample); output is longer by the delay."""
    d = ms * sr / 1000.0
    n_out = x.shape[-1] + int(math.ceil(d))
    nfft = 2 * n_out
    f = torch.fft.rfftfreq(nfft, 1.0 / sr).to(torch.float64)
    X = torch.fft.rfft(x.to(torch.float64), n=nfft)
    return torch.fft.irfft(X * torch.exp(-2j * math.pi * f * ms / 1000.0), n=nfft)[..., :n_out].to(torch.float32)


def write(path: Path, x: torch.Tensor, sr: int = SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.T.numpy(), sr, subtype="FLOAT" if path.suffix == ".wav" else None)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    n = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :n].flatten().double(), b[..., :n].flatten().double()
    return float((a * b).sum() / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    raw = load("and_its_all.wav")
    processed, _ = mix(raw, SR)  # the house-style "engineer's mix", not delayed
    delayed = fractional_delay(processed, DELAY_MS, SR)

    write(root / "raw" / "song.wav", raw)
    write(root / "mixed" / "song.flac", delayed)  # extensions may differ

    # Heavy processing of the same raw: hard EQ, 10:1 compression, 15 dB drive, no delay.
    heavy = schema.default_dict()
    heavy["eq"].update(high_pass_freq_hz=200.0, low_shelf_gain_db=6.0, low_mid_gain_db=-8.0,
                       presence_gain_db=10.0, high_shelf_gain_db=8.0, low_pass_freq_hz=6000.0)
    heavy["compressor"].update(threshold_db=-35.0, ratio=10.0, attack_ms=1.0, release_ms=50.0, makeup_gain_db=10.0)
    heavy["saturation"].update(drive_db=15.0, asymmetry=0.8, mix=1.0)
    heavy_mix = console.render(raw.unsqueeze(0), SR, schema.stack([heavy]))[0]
    write(root / "raw" / "heavy.wav", raw)
    write(root / "mixed" / "heavy.wav", heavy_mix)

    # A mix of a different voice (a house-style mix of another recording) under this raw's name.
    other_mix, _ = mix(load("sing_me_a_song.wav"), SR)
    write(root / "raw" / "wrong.wav", raw)
    write(root / "mixed" / "wrong.wav", other_mix)

    # Raw at 48 kHz, mix at 44.1 kHz delayed 25 ms.
    write(root / "raw" / "rates.wav", AF.resample(raw, SR, 48000), 48000)
    write(root / "mixed" / "rates.wav", delayed)

    # Mix with 1.5 s of extra tail and inverted polarity: usable, with warnings.
    write(root / "raw" / "tail.wav", raw)
    write(root / "mixed" / "tail.wav", -torch.nn.functional.pad(processed, (0, int(1.5 * SR))))

    # Broken, short and silent files.
    (root / "raw" / "broken.wav").write_text("this is not audio\n")
    write(root / "mixed" / "broken.wav", processed)
    write(root / "raw" / "short.wav", raw[:, : int(0.2 * SR)])
    write(root / "mixed" / "short.wav", processed[:, : int(0.2 * SR)])
    write(root / "raw" / "silent.wav", torch.zeros(1, 2 * SR))
    write(root / "mixed" / "silent.wav", processed)
    click = torch.zeros(1, 2 * SR)
    click[0, SR] = 0.01  # peak -40 dBFS, but one sample: integrated loudness about -83 LUFS
    write(root / "raw" / "click.wav", raw)
    write(root / "mixed" / "click.wav", click)

    # Unmatched names.
    write(root / "raw" / "lonely.wav", raw)
    write(root / "mixed" / "orphan.wav", processed)
    (root / "raw" / "notes.txt").write_text("not audio, ignored\n")

    report = data.check_dir(root, sample_rate=SR)
    return dict(root=root, raw=raw, processed=processed, delayed=delayed, report=report)


def by_name(report, name):
    usable = {p.name: p for p in report.usable}
    skipped = {s.name: s.reason for s in report.skipped}
    return usable.get(name), skipped.get(name)


# ---------------------------------------------------------------------------
# alignment
# ---------------------------------------------------------------------------

def test_planted_offset_found_within_1ms_and_aligned(dataset):
    pair, reason = by_name(dataset["report"], "song")
    assert reason is None and isinstance(pair, AlignedPair)
    assert abs(pair.offset_ms - DELAY_MS) < 1.0
    assert pair.sample_rate == SR
    assert pair.raw.shape == pair.mixed.shape
    n, n_raw = pair.num_samples, dataset["raw"].shape[-1]
    assert abs(n - n_raw) <= 2  # only the 25 ms lead-in of the mix is cut
    # The raw is untouched (the mix was the later one; a sample of "tail" is padded with silence) ...
    m = min(n, n_raw)
    assert torch.allclose(pair.raw[:, :m], dataset["raw"][:, :m]) and torch.all(pair.raw[:, m:] == 0)
    # ... and the aligned mix lines up with the undelayed processed signal, which the
    # file as stored does not.
    assert cosine(pair.mixed, dataset["processed"]) > 0.99
    assert cosine(dataset["delayed"], dataset["processed"]) < 0.5
    assert pair.correlation > data.MIN_CORRELATION


def test_staging_is_measured_on_the_whole_raw(dataset):
    pair, _ = by_name(dataset["report"], "song")
    raw = dataset["raw"]
    staged = raw * 10 ** (pair.staging_db / 20)
    assert abs(float(integrated_loudness(staged.unsqueeze(0), SR)[0]) - (-18.0)) < 0.1


def test_heavily_processed_mix_of_same_raw_is_accepted(dataset):
    pair, reason = by_name(dataset["report"], "heavy")
    assert reason is None, reason
    assert abs(pair.offset_ms) < 1.0


def test_mix_of_a_different_voice_is_rejected(dataset):
    pair, reason = by_name(dataset["report"], "wrong")
    assert pair is None
    assert "does not match" in reason
    res = next(r for r in dataset["report"].results if r.name == "wrong")
    assert res.status == "skipped" and abs(res.correlation) < data.MIN_CORRELATION


def test_different_sample_rates_still_align(dataset):
    pair, reason = by_name(dataset["report"], "rates")
    assert reason is None, reason
    assert pair.sample_rate == SR and pair.raw.shape == pair.mixed.shape
    assert abs(pair.offset_ms - DELAY_MS) < 1.0
    assert cosine(pair.mixed, dataset["processed"]) > 0.98


def test_tail_is_kept_whole_and_reported_and_inverted_polarity_warns(dataset):
    """A mix 1.5 s longer than its raw (a reverb tail) keeps its full length, the raw padded with silence."""
    pair, reason = by_name(dataset["report"], "tail")
    assert reason is None, reason
    warnings = [w for w in dataset["report"].warnings if w.startswith("tail:")]
    assert any("polarity" in w for w in warnings)
    assert not any("same take" in w for w in warnings)  # a tail of a few seconds is normal, not suspicious
    assert abs(pair.offset_ms) < 1.0
    n_raw, tail = dataset["raw"].shape[-1], int(1.5 * SR)
    assert pair.num_samples == n_raw + tail and pair.mixed.shape[-1] == n_raw + tail
    assert torch.all(pair.raw[:, n_raw:] == 0) and torch.allclose(pair.raw[:, :n_raw], dataset["raw"])
    assert cosine(pair.mixed, dataset["processed"]) > 0.99  # flipped back
    res = next(r for r in dataset["report"].results if r.name == "tail")
    assert res.tail_s == pytest.approx(1.5, abs=0.01)
    line = next(x for x in dataset["report"].format().splitlines() if x.startswith("tails:"))
    assert "longest 1.50 s, tail" in line


def test_a_mix_ending_well_before_its_raw_warns(tmp_path):
    raw = load("and_its_all.wav")
    processed, _ = mix(raw, SR)
    write(tmp_path / "raw" / "cut.wav", raw)
    write(tmp_path / "mixed" / "cut.wav", processed[:, : raw.shape[-1] - int(1.5 * SR)])
    report = data.check_dir(tmp_path, sample_rate=SR)
    assert [p.name for p in report.usable] == ["cut"]
    assert any("ends 1.50 s before the raw" in w for w in report.warnings)
    assert report.usable[0].num_samples == raw.shape[-1] - int(1.5 * SR)


def test_negative_offset_sign():
    raw = load("sing_me_a_song.wav")
    late_raw = fractional_delay(raw, 40.0, SR)  # the raw starts 40 ms after the mix
    offset, corr = data.estimate_offset(late_raw, raw, SR)
    assert abs(offset - (-40.0)) < 1.0 and corr > 0.9
    r, m = data.align(late_raw, raw, offset, SR)
    assert r.shape == m.shape and cosine(r, m) > 0.99


# ---------------------------------------------------------------------------
# problems are reported, never silently trained on
# ---------------------------------------------------------------------------

def test_unreadable_short_and_silent_are_skipped_with_reasons(dataset):
    report = dataset["report"]
    expected = {"broken": "unreadable", "short": "too short", "silent": "silent raw", "click": "silent mixed"}
    for name, words in expected.items():
        pair, reason = by_name(report, name)
        assert pair is None, name
        assert reason is not None and words in reason, (name, reason)
        assert "\n" not in reason
    usable = {p.name for p in report.usable}
    assert usable == {"song", "heavy", "rates", "tail"}
    text = report.format()
    for name in expected:
        assert f"skipped {name}:" in text
    assert text.splitlines()[-1] == f"4 pairs usable, {len(expected) + 1} skipped"


def test_find_pairs_reports_unmatched(dataset):
    pairs, unmatched_raw, unmatched_mixed = data.find_pairs(dataset["root"])
    names = [p.name for p in pairs]
    assert names == sorted(names)
    assert set(names) == {"song", "heavy", "wrong", "rates", "tail", "broken", "short", "silent", "click"}
    assert unmatched_raw == ["lonely"] and unmatched_mixed == ["orphan"]
    song = next(p for p in pairs if p.name == "song")
    assert song.raw_path.suffix == ".wav" and song.mixed_path.suffix == ".flac"
    assert any(w.startswith("lonely:") for w in dataset["report"].warnings)


def _assert_one_line_error(path, *words):
    with pytest.raises(DataError) as e:
        data.find_pairs(path)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg
    return msg


def test_folder_errors(tmp_path):
    _assert_one_line_error(tmp_path / "nope", "does not exist")
    (tmp_path / "raw").mkdir()
    _assert_one_line_error(tmp_path, "mixed/")
    (tmp_path / "mixed").mkdir()
    _assert_one_line_error(tmp_path, "no audio files")  # both empty
    write(tmp_path / "raw" / "a.wav", torch.zeros(1, SR))
    _assert_one_line_error(tmp_path, "mixed", "no audio files")  # raw has files, mixed/ empty
    write(tmp_path / "mixed" / "b.wav", torch.zeros(1, SR))
    _assert_one_line_error(tmp_path, "same name", "a.wav")  # no matched pairs
    write(tmp_path / "mixed" / "a.wav", torch.zeros(1, SR))
    pairs, ur, um = data.find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a"] and ur == [] and um == ["b"]


# ---------------------------------------------------------------------------
# training helpers
# ---------------------------------------------------------------------------

def _ramp_pair(n: int) -> AlignedPair:
    raw = torch.arange(n, dtype=torch.float32).reshape(1, n)
    return AlignedPair.from_audio("ramp", raw, torch.cat([2 * raw, 3 * raw]), SR, staging_db=0.0)


def test_random_crop_is_aligned_seeded_and_pads():
    pair = _ramp_pair(1000)
    r1, m1 = data.random_crop(pair, 100, torch.Generator().manual_seed(3))
    r2, m2 = data.random_crop(pair, 100, torch.Generator().manual_seed(3))
    assert r1.shape == (1, 100) and m1.shape == (2, 100)
    assert torch.equal(r1, r2) and torch.equal(m1, m2)
    assert torch.equal(m1[0], 2 * r1[0]) and torch.equal(m1[1], 3 * r1[0])  # same window in both
    assert torch.equal(r1[0], r1[0, 0] + torch.arange(100, dtype=torch.float32))  # contiguous
    starts = {int(data.random_crop(pair, 100, torch.Generator().manual_seed(s))[0][0, 0]) for s in range(20)}
    assert len(starts) > 1 and max(starts) <= 900
    short = _ramp_pair(60)
    r, m = data.random_crop(short, 100, torch.Generator().manual_seed(0))
    assert r.shape == (1, 100) and m.shape == (2, 100)
    assert torch.equal(r[0, :60], short.raw[0]) and torch.all(r[:, 60:] == 0) and torch.all(m[:, 60:] == 0)


def test_split_by_song_deterministic_disjoint():
    names = [f"song{i:02d}" for i in range(20)]
    train, val = data.split_by_song(names, 0.2, seed=7)
    assert (train, val) == data.split_by_song(list(reversed(names)), 0.2, seed=7)
    assert not set(train) & set(val) and sorted(train + val) == names
    assert len(val) == 4
    assert data.split_by_song(names, 0.2, seed=8) != (train, val)
    # Two songs: one each side; one song: nothing to validate on.
    t2, v2 = data.split_by_song(["a", "b"], 0.1, seed=0)
    assert len(t2) == 1 and len(v2) == 1
    assert data.split_by_song(["a"], 0.1, seed=0) == (["a"], [])
    # Takes of one song never straddle the split.
    takes = [f"{s}_take{k}" for s in "abcdef" for k in (1, 2)]
    t3, v3 = data.split_by_song(takes, 0.34, seed=1, song=lambda n: n.split("_")[0])
    assert {n.split("_")[0] for n in t3}.isdisjoint({n.split("_")[0] for n in v3})
    assert len(v3) == 4


def test_long_signals_resample_in_blocks_as_torchaudio_does(monkeypatch):
    """dmst's resampling convolves a long signal in blocks (no unfolded copy many times its size): the output is
    torchaudio's, to float rounding, at the ratios the data path uses; a short signal takes torchaudio's call itself."""
    from dmst import _torchaudio

    monkeypatch.setattr(_torchaudio, "RESAMPLE_UNFOLD_MAX", 1 << 14)  # blocks of a few hundred frames: many seams
    g = torch.Generator().manual_seed(3)
    for orig, new, shape in [(2, 1, (20011,)), (48000, 44100, (2, 30001)), (44100, 48000, (1, 1, 20000)),
                             (22050, 44100, (3, 7001))]:
        x = torch.randn(*shape, generator=g)
        got, want = _torchaudio.resample(x, orig, new), AF.resample(x, orig, new)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) < 1e-6, (orig, new)
    monkeypatch.setattr(_torchaudio, "RESAMPLE_UNFOLD_MAX", 1 << 24)
    x = torch.randn(2, 5000, generator=g)
    assert torch.equal(_torchaudio.resample(x, 48000, 44100), AF.resample(x, 48000, 44100))


def test_spectral_smoothing_and_band_weight_in_blocks_match_a_direct_computation(monkeypatch):
    """The alignment's constant-Q smoothing, computed block by block, is the moving average over each bin's
    window [floor(k/c) - 1, ceil(k c) + 1] (c = 2^(1/6)), written out directly here; the band weight is the same
    whatever the block size."""
    monkeypatch.setattr(data, "_BLOCK_BINS", 97)
    mag = torch.rand(1000, generator=torch.Generator().manual_seed(5))
    c = 2.0 ** (1 / 6)
    want = torch.tensor([float(mag[max(0, math.floor(k / c) - 1):min(999, math.ceil(k * c) + 1) + 1].double().mean())
                         for k in range(1000)])
    torch.testing.assert_close(data._smoothed_magnitude(mag).double(), want.double(), rtol=1e-6, atol=0)
    small = data._band_weight(4000, 22050.0, data.ANALYSIS_BAND_HZ)
    monkeypatch.setattr(data, "_BLOCK_BINS", 1 << 18)
    data._band_weight.cache_clear()
    assert torch.equal(small, data._band_weight(4000, 22050.0, data.ANALYSIS_BAND_HZ))
    data._band_weight.cache_clear()


def test_cache_packing_in_blocks_round_trips_within_one_step(monkeypatch):
    """24-bit packing block by block: every sample comes back within one step of its channel group's scale
    (half a step of rounding, plus float32's own near full scale), and the loudest sample uses the full scale."""
    import numpy as np

    monkeypatch.setattr(data, "_BLOCK_BINS", 1000)
    rng = np.random.default_rng(0)
    frames = (rng.standard_normal((3, 4321)) * [[0.01], [0.3], [0.2]]).astype(np.float32).T  # a transposed view
    packed, scales = data._pack24(frames, raw_channels=1)
    assert packed.shape == (4321, 9) and packed.dtype == np.uint8
    back = data._unpack24(packed, 1, scales)
    assert np.abs(back[:, :1] - frames[:, :1]).max() <= scales[0]
    assert np.abs(back[:, 1:] - frames[:, 1:]).max() <= scales[1]
    assert np.abs(frames[:, 1:]).max() / scales[1] == pytest.approx(data._FULL_SCALE)
