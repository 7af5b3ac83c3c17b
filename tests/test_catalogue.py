"""A real catalogue: pairs checked once and cached (24-bit, keyed by content), stereo as delivered,
tails kept, training that stops on a plateau, a split by song and a resume that keeps its arguments.

Loudness here is measured with an independent BS.1770-4 meter (scipy.signal.sosfilt with the
standard's published 48 kHz K-weighting, numpy gating), not with dmst's."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

import train
from dmst import data, schema
from dmst.cli import main as dmst_main
from dmst.console import render
from dmst.encoder import load_model, read_checkpoint
from dmst.losses import MixLoss, side_stft_loss

ROOT = Path(__file__).resolve().parents[1]
SR = 44100
FAST = ["--batch-size", "2", "--crop-seconds", "1.0", "--quiet", "--workers", "1"]

# ITU-R BS.1770-4, Tables 1 and 2: the K-weighting as published (48 kHz).
K_WEIGHTING_48K = np.array([
    [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241, 0.73248077421585],
    [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621],
])


def reference_lufs(x: np.ndarray, sr: int) -> float:
    """BS.1770-4 integrated loudness of (channels, n) audio: resampled to 48 kHz by scipy, channel powers summed."""
    x = np.asarray(x, dtype=np.float64)
    if sr != 48000:
        g = math.gcd(48000, sr)
        x = scipy.signal.resample_poly(x, 48000 // g, sr // g, axis=-1)
    y = scipy.signal.sosfilt(K_WEIGHTING_48K, x, axis=-1)
    starts = range(0, y.shape[-1] - 19200 + 1, 4800)  # 400 ms blocks, 75 % overlap
    z = np.array([(y[:, s:s + 19200] ** 2).mean(axis=-1).sum() for s in starts])
    level = -0.691 + 10 * np.log10(np.maximum(z, 1e-30))
    relative = -0.691 + 10 * np.log10(z[level > -70].mean()) - 10
    return float(-0.691 + 10 * np.log10(z[(level > -70) & (level > relative)].mean()))


def example(name: str, sr: int = SR) -> np.ndarray:
    x, fs = sf.read(ROOT / "examples" / name, dtype="float64", always_2d=True)
    x = x[:, 0]
    if sr != fs:
        g = math.gcd(sr, fs)
        x = scipy.signal.resample_poly(x, sr // g, fs // g)
    return x.astype(np.float32)


SETTING = schema.default_dict()
SETTING["eq"]["presence_gain_db"] = 5.0
SETTING["compressor"].update(threshold_db=-28.0, ratio=3.0)


def dual_mono_catalogue(folder: Path, sr: int = SR, target_lufs: float = -14.0, stereo_raws=()) -> Path:
    """Six pairs (halves of the examples): a console mix as identical L/R channels at ``target_lufs`` (as delivered)."""
    for sub in ("raw", "mixed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for wav in sorted((ROOT / "examples").glob("*.wav")):
        x = example(wav.name, sr)
        for i, part in enumerate((x[: x.size // 2], x[x.size // 2:])):
            name = f"{wav.stem}_{i}"
            with torch.no_grad():
                m = render(torch.from_numpy(part.copy())[None, None], sr, schema.stack([SETTING]))[0].numpy()
            stereo = np.concatenate([m, m])
            stereo *= 10 ** ((target_lufs - reference_lufs(stereo, sr)) / 20)
            raw = np.stack([part, 0.9 * part]) if name in stereo_raws else part[None]
            sf.write(folder / "raw" / f"{name}.wav", raw.T, sr, subtype="FLOAT")
            sf.write(folder / "mixed" / f"{name}.wav", stereo.T, sr, subtype="FLOAT")
    return folder


def render_file(tmp_path, raw: np.ndarray, sr: int, model: Path, name: str):
    src, out = tmp_path / f"{name}_in.wav", tmp_path / f"{name}_out.wav"
    sf.write(src, raw.T, sr, subtype="FLOAT")
    assert dmst_main(["render", str(src), "--model", str(model), "-o", str(out), "--bit-depth", "32f"]) == 0
    y, out_sr = sf.read(out, dtype="float64", always_2d=True)
    return y.T, out_sr


# ---------------------------------------------------------------------------
# the cache
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("cat")
    raw = example("and_its_all.wav")
    with torch.no_grad():
        mixed = render(torch.from_numpy(raw.copy())[None, None], SR, schema.stack([SETTING]))[0].numpy()
    for sub in ("raw", "mixed"):
        (root / sub).mkdir()
    for k in range(4):  # four songs; the mix is stereo, delayed 10 ms and runs 1 s past the raw (a tail)
        part = raw[k * SR // 2:]
        m = mixed[:, k * SR // 2:]
        tail = np.concatenate([np.zeros((1, 441), np.float32), m, 0.01 * np.random.default_rng(k).standard_normal((1, SR)).astype(np.float32)], axis=1)
        stereo = np.concatenate([tail, 0.8 * tail])
        sf.write(root / "raw" / f"song{k}.wav", part, SR, subtype="PCM_24")
        sf.write(root / "mixed" / f"song{k}.wav", stereo.T, SR, subtype="PCM_24")
    sf.write(root / "raw" / "bad.wav", raw, SR)
    (root / "mixed" / "bad.wav").write_text("not audio")
    return root


def test_cache_stores_pairs_at_24_bit_far_below_what_the_loss_can_tell(catalogue, tmp_path):
    memory = data.check_dir(catalogue, SR)
    cached = data.check_dir(catalogue, SR, cache_dir=tmp_path / "c")
    assert [p.name for p in cached.usable] == [p.name for p in memory.usable] == ["song0", "song1", "song2", "song3"]
    a, b = memory.usable[1], cached.usable[1]
    assert b.audio is None and b.cache_path.exists()  # nothing of the song is held in memory
    assert (b.num_samples, b.raw_channels, b.mixed_channels) == (a.num_samples, 1, 2)
    step = float(a.mixed.abs().max()) / (2 ** 23 - 1)
    assert float((a.mixed - b.mixed).abs().max()) <= step  # half a step of rounding, plus float32 rounding
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    (ra, ma), (rb, mb) = data.random_crop(a, SR, gen()), data.random_crop(b, SR, gen())
    loss = MixLoss(SR)
    quantised = float(loss(mb[None], ma[None]))
    tenth_db = float(loss(ma[None] * 10 ** (0.1 / 20), ma[None]))  # a 0.1 dB gain change
    assert quantised < tenth_db / 100, (quantised, tenth_db)
    # float16, for comparison, is not far below: its 11-bit mantissa moves the loss more than 0.1 dB does
    assert float(loss(ma[None].half().float(), ma[None])) > tenth_db


def test_second_run_reads_from_the_cache_without_decoding(catalogue, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = data.check_dir(catalogue, SR, cache_dir=cache)
    assert not any(r.cached for r in first.results)

    def no_decoding(*a, **k):
        raise AssertionError("decoded a file that is in the cache")

    monkeypatch.setattr(data, "_decode", no_decoding)
    second = data.check_dir(catalogue, SR, cache_dir=cache)
    assert all(r.cached for r in second.results)
    assert [(p.name, p.key, p.staging_db, p.mixed_lufs) for p in second.usable] == \
           [(p.name, p.key, p.staging_db, p.mixed_lufs) for p in first.usable]
    assert [(s.name, s.reason) for s in second.skipped] == [(s.name, s.reason) for s in first.skipped]
    # A touched file (same bytes, new date) is hashed again, but not decoded.
    os.utime(catalogue / "raw" / "song0.wav", ns=(1, 10**18))
    assert data.check_dir(catalogue, SR, cache_dir=cache).usable[0].key == first.usable[0].key
    monkeypatch.undo()
    # Another sample rate or alignment search is another entry.
    assert data.check_dir(catalogue, 48000, cache_dir=cache).usable[0].key != first.usable[0].key


def test_new_mixes_are_the_only_pairs_decoded(catalogue, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    data.check_dir(catalogue, SR, cache_dir=cache)
    more = tmp_path / "more"
    for sub in ("raw", "mixed"):
        (more / sub).mkdir(parents=True)
        for f in (catalogue / sub).iterdir():
            (more / sub / f.name).write_bytes(f.read_bytes())
    x = example("sing_me_a_song.wav")
    sf.write(more / "raw" / "new.wav", x, SR)
    sf.write(more / "mixed" / "new.wav", 0.5 * x, SR)
    decoded = []
    real = data._decode
    monkeypatch.setattr(data, "_decode", lambda source, name: decoded.append(name) or real(source, name))
    report = data.check_dir(more, SR, cache_dir=cache)
    assert sorted(decoded) == ["new.wav", "new.wav"]  # its raw and its mix, once each
    assert len(report.usable) == 5


def test_pair_checking_in_two_processes_gives_the_same_entries(catalogue, tmp_path):
    one = data.check_dir(catalogue, SR, cache_dir=tmp_path / "one", workers=1)
    two = data.check_dir(catalogue, SR, cache_dir=tmp_path / "two", workers=2)
    assert [asdict_small(p) for p in one.usable] == [asdict_small(p) for p in two.usable]
    for a, b in zip(one.usable, two.usable):
        assert a.cache_path.read_bytes() == b.cache_path.read_bytes()
    assert [(r.name, r.status, r.reason, r.warnings) for r in one.results] == \
           [(r.name, r.status, r.reason, r.warnings) for r in two.results]


def asdict_small(p):
    return (p.name, p.key, p.num_samples, p.offset_ms, p.staging_db, p.correlation, p.mixed_lufs, p.tail_s)


def test_tails_are_kept_and_reported(catalogue):
    report = data.check_dir(catalogue, SR)
    for p in report.usable:
        assert p.tail_s == pytest.approx(1.0, abs=0.01)
        assert float(p.raw[:, -SR // 2:].abs().max()) == 0  # raw padded with silence under the tail
        assert float(p.mixed[:, -SR // 2:].abs().max()) > 0  # the mix's tail is there
    assert "tails: 4 mixes run past the raw's end (longest 1.00 s" in report.format()


# ---------------------------------------------------------------------------
# stereo as delivered
# ---------------------------------------------------------------------------

def test_layout_conversion_keeps_the_delivered_loudness():
    x = torch.from_numpy(example("and_its_all.wav")[None])
    wide = torch.cat([x, 0.3 * torch.roll(x, 500)])
    for mix, channels in ((x, 2), (wide, 1)):
        pair = data.AlignedPair.from_audio("p", x, mix, SR, staging_db=0.0)
        moved = data.to_layout(mix, channels) * 10 ** (pair.mix_layout_gain_db(channels) / 20)
        assert moved.shape[0] == channels
        assert reference_lufs(moved.numpy(), SR) == pytest.approx(reference_lufs(mix.numpy(), SR), abs=0.05)
    assert torch.equal(data.to_layout(x, 2)[0], data.to_layout(x, 2)[1])


def test_side_term_is_zero_for_dual_mono_and_sees_the_stereo_image():
    x = torch.from_numpy(example("and_its_all.wav")[: 2 * SR])[None, None]
    y = 0.7 * torch.roll(x, 30)
    mono = MixLoss(SR)
    dual_p, dual_t = x.repeat(1, 2, 1).requires_grad_(), y.repeat(1, 2, 1)
    terms = mono.terms(dual_p, dual_t)
    assert float(terms["side"].detach()) == 0.0
    assert float(mono(dual_p, dual_t)) == pytest.approx(float(mono(x, y)), rel=1e-5)  # dual mono trains as mono
    terms["side"].backward()
    assert torch.all(dual_p.grad == 0)
    wide_t = torch.cat([y, 0.5 * y], dim=1)
    assert float(side_stft_loss(dual_t, wide_t)) > 0.1


def test_dual_mono_mix_at_minus_14_renders_at_minus_14_from_mono_and_stereo_raws(tmp_path):
    """--global on dual-mono mixes delivered at -14 LUFS (BS.1770, channels summed); the model renders stereo."""
    folder = dual_mono_catalogue(tmp_path / "data", stereo_raws={"and_its_all_1", "audioflux_voice_0"})
    run = tmp_path / "run"
    assert train.main(["--data", str(folder), "--out", str(run), "--global", "--epochs", "6", "--lr", "2e-2", *FAST]) == 0
    ckpt = read_checkpoint(run / "model.pt")
    assert ckpt["output_channels"] == 2 and ckpt["meta"]["training"]["output_channels"] == 2
    learned = schema.unstack(schema.denormalize(torch.sigmoid(ckpt["state_dict"]["default_logits"])[None].double()))[0]
    assert learned["output"]["loudness_lufs"] == pytest.approx(-14.0, abs=0.3)
    x = example("sing_me_a_song.wav")
    for raw in (x[None], np.stack([x, 0.8 * x])):
        y, out_sr = render_file(tmp_path, raw, SR, run / "model.pt", f"ch{raw.shape[0]}")
        assert out_sr == SR and y.shape[0] == 2
        assert reference_lufs(y, SR) == pytest.approx(-14.0, abs=0.3)
    y, _ = render_file(tmp_path, x[None], SR, run / "model.pt", "centred")
    assert np.array_equal(y[0], y[1])  # a mono raw becomes a centred stereo mix


def test_a_48_khz_catalogue_trains_and_renders_at_48_khz(tmp_path):
    folder = dual_mono_catalogue(tmp_path / "data", sr=48000, target_lufs=-15.0)
    run = tmp_path / "run"
    assert train.main(["--data", str(folder), "--out", str(run), "--global", "--epochs", "6", "--lr", "2e-2", *FAST]) == 0
    ckpt = read_checkpoint(run / "model.pt")
    assert ckpt["meta"]["training"]["sample_rate"] == 48000
    entry = json.loads(next(p for p in (run / "cache").glob("*.json") if p.name != "files.json").read_text())
    assert entry["pair"]["sample_rate"] == 48000
    x = example("sing_me_a_song.wav", 48000)
    y, out_sr = render_file(tmp_path, x[None], 48000, run / "model.pt", "48k")
    assert out_sr == 48000 and y.shape[0] == 2
    learned = load_model(run / "model.pt").predict(x[None], 48000)["output"]["loudness_lufs"]
    assert reference_lufs(y, 48000) == pytest.approx(learned, abs=0.05)  # the 48 kHz render lands on its target
    # What 4 epochs learn of the mixes' -15 LUFS: from the training start (the sends on against these dry mixes,
    # until the end step switches them off) the learned loudness was 0.4-0.5 LU short (-15.4, -15.5 measured).
    assert learned == pytest.approx(-15.0, abs=0.75)


def test_fit_renders_in_the_mixs_layout_at_its_delivered_loudness(tmp_path):
    x = example("and_its_all.wav")[: 2 * SR]
    with torch.no_grad():
        m = render(torch.from_numpy(x.copy())[None, None], SR, schema.stack([SETTING]))[0].numpy()
    stereo = np.concatenate([m, 0.8 * m])
    stereo *= 10 ** ((-13.0 - reference_lufs(stereo, SR)) / 20)
    sf.write(tmp_path / "raw.wav", x, SR, subtype="FLOAT")
    sf.write(tmp_path / "mix.wav", stereo.T, SR, subtype="FLOAT")
    assert dmst_main(["fit", str(tmp_path / "raw.wav"), str(tmp_path / "mix.wav"), "-o", str(tmp_path / "p.json"),
                      "--steps", "5"]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["meta"]["output_channels"] == 2
    assert dmst_main(["render", str(tmp_path / "raw.wav"), "--params", str(tmp_path / "p.json"),
                      "-o", str(tmp_path / "out.wav"), "--bit-depth", "32f"]) == 0
    y, _ = sf.read(tmp_path / "out.wav", dtype="float64", always_2d=True)
    assert y.shape[1] == 2 and reference_lufs(y.T, SR) == pytest.approx(-13.0, abs=0.1)


# ---------------------------------------------------------------------------
# training that converges, split by song, resume with the run's arguments
# ---------------------------------------------------------------------------

def test_training_stops_on_a_plateau_and_records_why(tmp_path):
    folder = dual_mono_catalogue(tmp_path / "data")
    run = tmp_path / "run"
    # lr 0: the validation loss never moves, so the run stops after the first epoch plus --patience
    assert train.main(["--data", str(folder), "--out", str(run), "--global", "--lr", "0", "--patience", "1", *FAST]) == 0
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["finished"] and "plateau" in last["stop_reason"]
    assert len(json.loads((run / "metrics.json").read_text())["epochs"]) == 2


def test_plateau_patience_counts_only_from_halfway_through_the_schedule(tmp_path):
    folder = dual_mono_catalogue(tmp_path / "data")
    run = tmp_path / "run"
    # lr 0 again, now over an 8-epoch schedule: epochs 2 and 3 end before halfway (2/8, 3/8 of it) and do not count,
    # so the first epoch without a decrease that counts is epoch 4 (4/8), and --patience 1 stops the run there.
    assert train.main(["--data", str(folder), "--out", str(run), "--global", "--lr", "0", "--patience", "1",
                       "--epochs", "8", *FAST]) == 0
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["finished"] and "plateau" in last["stop_reason"]
    assert train.PLATEAU_FROM_PROGRESS == 0.5


def test_validation_split_is_by_song(tmp_path):
    folder = tmp_path / "data"
    src = dual_mono_catalogue(tmp_path / "src")
    for sub in ("raw", "mixed"):
        (folder / sub).mkdir(parents=True)
        for f in sorted((src / sub).iterdir()):  # two takes of each of three songs: SONG__TAKE
            song, take = f.stem.rsplit("_", 1)
            (folder / sub / f"{song}__take{take}.wav").write_bytes(f.read_bytes())
    run = tmp_path / "run"
    assert train.main(["--data", str(folder), "--out", str(run), "--global", "--epochs", "1", "--val-fraction", "0.34", *FAST]) == 0
    summary = json.loads((run / "metrics.json").read_text())["data"]
    assert summary["songs"] == 3 and summary["val_pairs"] == 2 and summary["train_pairs"] == 4
    val_songs = {n.split("__")[0] for n in summary["val_names"]}
    assert len(val_songs) == 1 and not val_songs & {n.split("__")[0] for n in summary["train_names"]}


def test_resume_refuses_other_arguments_and_keeps_the_runs(tmp_path, capsys):
    folder = dual_mono_catalogue(tmp_path / "data")
    run = tmp_path / "run"
    common = ["--data", str(folder), "--out", str(run), "--global", *FAST]
    assert train.main(common + ["--epochs", "1", "--lr", "1e-2"]) == 0
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(folder), "--out", str(run), "--resume", "--lr", "3e-3", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dmst train: error: --resume: --lr 0.003 differs from the run's 0.01") and "\n" not in err
    # Without arguments, --resume continues with the run's own (and it had finished its one epoch).
    assert train.main(["--data", str(folder), "--out", str(run), "--resume", "--quiet"]) == 0
    assert "already finished after epoch 1" in capsys.readouterr().out


def test_a_mono_batch_rendered_once_equals_its_centred_stereo_render():
    """train.py renders mono raws once for a stereo layout and copies them; that is the dual-mono render."""
    from dmst.encoder import load_model

    x = torch.from_numpy(example("and_its_all.wav")[: SR])[None, None]
    encoder = load_model("default").encoder
    context = (torch.tensor([3.0]), torch.tensor([0.5]))
    with torch.no_grad():
        once = train.predict_and_render(encoder, x, context, SR, channels=2)
        dual = train.predict_and_render(encoder, x.repeat(1, 2, 1), context, SR, channels=2)
    assert once.shape == dual.shape == (1, 2, SR)
    assert float((once - dual).abs().max()) < 1e-5 * float(dual.abs().max())
