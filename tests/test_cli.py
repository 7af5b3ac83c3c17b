"""The dmst command line: settings round-trip through JSON, files keep their format, and every
user mistake ends in one line on stderr with nothing written or changed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import dmst
from dmst import schema
from dmst.audio_io import MIN_SAMPLES, true_peak_dbfs
from dmst.cli import main
from dmst.effects.sends import tail_samples

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "and_its_all.wav"
SHIPPED = ["modern_clean", "aggressive", "smooth", "bright", "warm", "punchy"]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocal():
    """1.4 s of a real vocal: (channels, samples) float32 at 44.1 kHz (short keeps the tests fast)."""
    audio, sr = sf.read(EXAMPLE, dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio[sr // 2: sr // 2 + int(1.4 * sr)].T), sr


@pytest.fixture()
def mono(tmp_path, vocal):
    path = tmp_path / "vocal.wav"
    sf.write(path, vocal[0].T, vocal[1], subtype="PCM_24")
    return path


@pytest.fixture()
def neutral(tmp_path):
    """A settings file with the schema defaults: renders without running the model."""
    path = tmp_path / "neutral.json"
    path.write_text(schema.to_json(schema.default_dict()))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict:
    """Every file and folder under ``folder`` with its mode, size, mtime and content hash."""
    state = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return state


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dmst: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# ---------------------------------------------------------------------------
# settings as JSON
# ---------------------------------------------------------------------------

def test_params_json_renders_exactly_like_the_model(capsys, tmp_path, mono):
    code, out, err = run(capsys, "params", mono)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema_version"] == schema.SCHEMA_VERSION
    assert doc["meta"]["model"] == "default" and doc["meta"]["source"] == "vocal.wav"
    assert list(doc)[2:] == list(schema.GROUPS)
    assert [f"{g}.{n}" for g in schema.GROUPS for n in doc[g]] == list(schema.KEYS)
    settings = tmp_path / "settings.json"
    settings.write_text(out)

    direct, via_json = tmp_path / "direct.wav", tmp_path / "via_json.wav"
    assert run(capsys, "render", mono, "-o", direct, "--bit-depth", "32f")[0] == 0
    assert run(capsys, "render", mono, "-o", via_json, "--bit-depth", "32f", "--params", settings)[0] == 0
    a, sr_a = sf.read(direct, dtype="float32")
    b, sr_b = sf.read(via_json, dtype="float32")
    assert sr_a == sr_b == 44100 and a.shape == b.shape
    assert np.max(np.abs(a - b)) <= 1e-6
    assert np.max(np.abs(a)) > 1e-3  # not silence


def test_params_with_presets_and_save_params_agree(capsys, tmp_path, mono):
    code, out, err = run(capsys, "params", mono, "--preset", "warm", "--preset", "bright", "--amount", "0.5")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["meta"]["presets"] == ["warm", "bright"] and doc["meta"]["amount"] == 0.5
    assert schema.from_json(out)["eq"]["high_shelf_freq_hz"] != pytest.approx(10000.0)  # half way only
    saved = tmp_path / "saved.json"
    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "out.wav", "--preset", "warm,bright",
                       "--amount", "0.5", "--save-params", saved)
    assert code == 0, err
    assert schema.from_json(saved.read_text()) == schema.from_json(out)


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["compressor"].update(ratoi=d["compressor"].pop("ratio")), ["compressor.ratoi", "ratio, knee_db"]),
    (lambda d: d["compressor"].update(ratio=50), ["compressor.ratio", "50", "between 1 and 20"]),
    (lambda d: d["eq"].update(low_shelf_gain_db="loud"), ["eq.low_shelf_gain_db", "number"]),
    (lambda d: d.update(chorus={"mix": 1}), ["'chorus'", "gate, eq, compressor, deesser, post_eq, saturation, delay, reverb, output, limiter"]),
    (lambda d: d["saturation"].pop("mix"), ["saturation.mix", "missing"]),
    (lambda d: d.update(schema_version=99), ["schema_version", "99"]),
    (lambda d: d["eq"].update(high_pass_slope_db=9), ["eq.high_pass_slope_db", "9", "one of 6, 12, 18, 24 dB/octave"]),
    (lambda d: d["eq"].update(high_pass_slope_db=48), ["eq.high_pass_slope_db", "48", "one of 6, 12, 18, 24 dB/octave"]),
])
def test_hand_edited_json_mistakes_are_refused(capsys, tmp_path, mono, edit, needles):
    doc = json.loads(schema.to_json(schema.default_dict(), model="default"))
    edit(doc)
    settings = tmp_path / "edited.json"
    settings.write_text(json.dumps(doc, indent=2))
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "render", mono, "-o", tmp_path / "out.wav", "--params", settings)
    assert_one_line_error(code, err, "edited.json", *needles)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("slope", [6, 24])
def test_an_edited_high_pass_slope_renders_and_round_trips(capsys, tmp_path, mono, slope):
    """`dmst params` JSON with the slope edited renders through --params, --save-params writes the same settings
    back, and the slope does what it says: a gentler (6) or steeper (24) high-pass passes more (less) of the lows."""
    code, out, err = run(capsys, "params", mono)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["eq"]["high_pass_slope_db"] == 12.0  # the bundled model's fixed value
    doc["eq"].update(high_pass_freq_hz=200.0)
    renders = {}
    for value in (12, slope):
        doc["eq"]["high_pass_slope_db"] = value
        edited, saved, wav = tmp_path / f"edited{value}.json", tmp_path / f"saved{value}.json", tmp_path / f"{value}.wav"
        edited.write_text(json.dumps(doc))
        code, _, err = run(capsys, "render", mono, "-o", wav, "--bit-depth", "32f", "--params", edited,
                           "--save-params", saved)
        assert code == 0, err
        assert schema.from_json(saved.read_text()) == schema.from_json(edited.read_text())
        # Over the take's own span: past it a send's tail follows, and the take's last sample (cut mid-phrase)
        # steps down to the silent dry signal there, a click whose 1/f^2 spectrum would swamp the lows.
        renders[value] = sf.read(wav, dtype="float64", always_2d=True)[0][: sf.info(mono).frames, 0]

    def low_db(y):  # energy between 60 and 140 Hz (an octave or so under the cutoff), re the whole
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
        f = np.fft.rfftfreq(len(y), 1 / 44100)
        return 10 * np.log10(spectrum[(f > 60) & (f < 140)].sum() / spectrum.sum())

    more_lows = low_db(renders[slope]) - low_db(renders[12])  # measured: +3.3 dB (6), -3.1 dB (24)
    assert more_lows > 2 if slope == 6 else more_lows < -2, more_lows


def test_broken_json_names_the_line(capsys, tmp_path, mono):
    settings = tmp_path / "broken.json"
    settings.write_text('{"eq": {"mid_q": 1.0,}}')
    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "out.wav", "--params", settings)
    assert_one_line_error(code, err, "broken.json", "not valid JSON", "line 1")


# ---------------------------------------------------------------------------
# files in, files out
# ---------------------------------------------------------------------------

def test_stereo_48k_stays_stereo_48k_full_length(capsys, tmp_path, vocal, neutral):
    audio, _ = vocal
    stereo = np.stack([audio[0], 0.5 * audio[0][::-1]])  # two different channels
    source = tmp_path / "duet.flac"
    sf.write(source, stereo.T, 48000, subtype="PCM_24")
    code, _, err = run(capsys, "render", source, "--out-dir", tmp_path / "out", "--preset", "punchy",
                       "--save-params", tmp_path / "used.json")
    assert code == 0, err
    info = sf.info(tmp_path / "out" / "duet.flac")  # format follows the input
    used = schema.from_json((tmp_path / "used.json").read_text())
    tail = tail_samples(48000, used["delay"], used["reverb"])  # the model's reverb send is on: its tail follows
    assert tail > 0.5 * 48000
    assert (info.channels, info.samplerate, info.frames) == (2, 48000, stereo.shape[1] + tail)
    assert info.subtype == "PCM_24"
    left, right = sf.read(tmp_path / "out" / "duet.flac", dtype="float32")[0].T
    assert not np.allclose(left, right)

    code, _, err = run(capsys, "render", source, "-o", tmp_path / "resampled.wav", "--sample-rate", "44100",
                       "--bit-depth", "16", "--params", neutral)
    assert code == 0, err
    info = sf.info(tmp_path / "resampled.wav")
    assert (info.channels, info.samplerate, info.subtype) == (2, 44100, "PCM_16")
    assert info.frames == pytest.approx(stereo.shape[1] * 44100 / 48000, abs=1)


def test_out_dir_keeps_names_and_folders_are_expanded_sorted(capsys, tmp_path, vocal, neutral):
    audio, sr = vocal
    songs = tmp_path / "songs"
    songs.mkdir()
    sf.write(songs / "b_take.wav", audio[:, : sr // 2].T, sr)
    sf.write(songs / "a_take.flac", audio[:, : sr // 4].T, sr)
    (songs / "notes.txt").write_text("not audio, not collected")
    code, _, err = run(capsys, "render", songs, "--out-dir", tmp_path / "mixed", "--params", neutral)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "mixed").iterdir()) == ["a_take.flac", "b_take.wav"]
    assert sf.info(tmp_path / "mixed" / "a_take.flac").frames == sr // 4
    assert sf.info(tmp_path / "mixed" / "b_take.wav").frames == sr // 2
    # --format overrides the inputs' formats.
    code, _, err = run(capsys, "render", songs, "--out-dir", tmp_path / "flacs", "--format", "flac", "--params",
                       neutral)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "flacs").iterdir()) == ["a_take.flac", "b_take.flac"]


def test_a_send_on_renders_the_tail_past_the_input(capsys, tmp_path, mono):
    """dmst render with a reverb on: stereo, and longer than the take by the reverb's tail (its RT60 x 80/60 plus
    the pre-delay, at damping this high), ending decayed; with the sends off it keeps the take's length (above)."""
    settings = schema.default_dict()
    settings["reverb"].update(send_db=-12.0, decay_s=0.6, pre_delay_ms=10.0, damping_hz=20000.0)
    path = tmp_path / "room.json"
    path.write_text(schema.to_json(settings))
    out = tmp_path / "room.wav"
    code, _, err = run(capsys, "render", mono, "-o", out, "--params", path)
    assert code == 0, err
    y, sr = sf.read(out, dtype="float64", always_2d=True)
    extra_s = (y.shape[0] - sf.info(mono).frames) / sr
    assert y.shape[1] == 2 and 0.010 + 0.6 * 80 / 60 - 0.001 <= extra_s <= 0.010 + 0.6 * 80 / 60 + 0.01, extra_s
    last, body = y[-sr // 100:].std(), y[: sf.info(mono).frames].std()
    assert 20 * np.log10(last / body) < -70.0  # what is left at the very end has decayed


def test_existing_output_needs_force(capsys, tmp_path, mono, neutral):
    out = tmp_path / "out.wav"
    out.write_bytes(b"precious")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "render", mono, "-o", out)
    assert_one_line_error(code, err, "out.wav", "already exists", "--force")
    assert snapshot(tmp_path) == before
    code, _, err = run(capsys, "render", mono, "-o", out, "--force", "--params", neutral)
    assert code == 0, err
    assert sf.info(out).frames == sf.info(mono).frames
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_true_peak_limiter_and_the_warning_when_it_is_off(capsys, tmp_path, mono):
    """A loud delivery (-6 LUFS): the limiter (on by default, -1 dBTP) keeps it under the ceiling, measured 4x
    oversampled; --ceiling sets the ceiling; --no-limiter gives the v2 warning; --no-limiter --limit the plain gain."""
    loud = schema.default_dict()
    loud["output"]["loudness_lufs"] = -6.0
    settings = tmp_path / "loud.json"
    settings.write_text(schema.to_json(loud))
    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "limited.wav", "--params", settings, "--bit-depth", "32f")
    assert code == 0, err
    assert "dmst: warning:" not in err
    y, sr = sf.read(tmp_path / "limited.wav", dtype="float32", always_2d=True)
    assert true_peak_dbfs(y.T, sr) <= -1.0 + 0.1
    saved = tmp_path / "at3.json"
    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "at3.wav", "--params", settings, "--bit-depth", "32f",
                       "--ceiling", "-3", "--save-params", saved)
    assert code == 0, err
    y, sr = sf.read(tmp_path / "at3.wav", dtype="float32", always_2d=True)
    assert true_peak_dbfs(y.T, sr) <= -3.0 + 0.1
    assert json.loads(saved.read_text())["limiter"]["ceiling_dbtp"] == -3.0  # the file reproduces the render

    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "hot.wav", "--params", settings, "--bit-depth", "32f",
                       "--no-limiter")
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("dmst: warning:")]
    assert len(warning) == 1 and "true peak" in warning[0] and "limiter" in warning[0] and "output.loudness_lufs" in warning[0]
    hot, _ = sf.read(tmp_path / "hot.wav", dtype="float32", always_2d=True)
    assert true_peak_dbfs(hot.T, sr) > 0.0

    saved = tmp_path / "turned_down.json"
    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "turned_down.wav", "--params", settings, "--bit-depth",
                       "32f", "--no-limiter", "--limit", "--ceiling", "-1", "--save-params", saved)
    assert code == 0, err
    assert "dmst: warning:" not in err
    y, sr = sf.read(tmp_path / "turned_down.wav", dtype="float32", always_2d=True)
    assert true_peak_dbfs(y.T, sr) == pytest.approx(-1.0, abs=0.01)
    ratio = y[np.abs(hot) > 0.1] / hot[np.abs(hot) > 0.1]
    assert np.ptp(ratio) < 1e-4  # one gain for the whole file: nothing else changed
    # The saved settings include the gain change, so they reproduce the file.
    loudness = json.loads(saved.read_text())["output"]["loudness_lufs"]
    assert loudness == pytest.approx(-6.0 + 20 * np.log10(ratio.mean()), abs=1e-3)

    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "x.wav", "--params", settings, "--limit")
    assert code == 0 and "--limit is deprecated" in err
    code, _, err = run(capsys, "render", mono, "-o", tmp_path / "y.wav", "--params", settings, "--ceiling", "-20")
    assert_one_line_error(code, err, "--ceiling", "-12 to 0")


def test_presets_command_lists_every_preset(capsys, tmp_path):
    code, out, err = run(capsys, "presets")
    assert code == 0, err
    listed = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert listed[: len(SHIPPED)] == SHIPPED  # the built-in presets, in the order presets.yaml gives them
    assert "compressor.ratio x0.75" in out
    mine = tmp_path / "mine.yaml"
    mine.write_text("shout:\n  description: Loud\n  output:\n    loudness_lufs: {add: 6}\n")
    code, out, err = run(capsys, "presets", "--presets", mine)
    assert code == 0 and "shout: Loud" in out and "output.loudness_lufs +6 LU" in out


def test_plot_writes_a_png(capsys, tmp_path, mono):
    png = tmp_path / "settings.png"
    code, _, err = run(capsys, "plot", mono, "-o", png, "--preset", "warm")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "plot", mono, "-o", png)
    assert_one_line_error(code, err, "already exists")
    assert snapshot(tmp_path) == before


def test_python_api_render_keeps_type_and_shape(vocal):
    audio, sr = vocal
    settings = schema.default_dict()
    y = dmst.render(audio, sr, settings)
    assert isinstance(y, np.ndarray) and y.shape == audio.shape and y.dtype == np.float32
    t = dmst.render(torch.from_numpy(audio), sr, settings)
    assert torch.is_tensor(t) and t.shape == audio.shape
    assert np.max(np.abs(t.numpy() - y)) < 1e-6
    settings["compressor"]["ratio"] = 0.5
    with pytest.raises(schema.ParamError, match="compressor.ratio"):
        dmst.render(audio, sr, settings)


# ---------------------------------------------------------------------------
# the bad-input matrix: one line on stderr, exit != 0, nothing written or changed
# ---------------------------------------------------------------------------

def _bad_input(kind: str, tmp: Path, good: Path):
    """(argv, words the message must contain) for one kind of user mistake."""
    out = tmp / "out.wav"
    if kind == "missing file":
        return ["render", tmp / "nope.wav", "-o", out], ["nope.wav", "not found"]
    if kind == "directory (params)":
        (tmp / "folder.wav").mkdir()
        return ["params", tmp / "folder.wav"], ["folder.wav", "folder"]
    if kind == "folder without audio":
        (tmp / "empty_folder").mkdir()
        return ["render", tmp / "empty_folder", "--out-dir", tmp / "o"], ["empty_folder", "no audio files"]
    if kind == "text file named .wav":
        (tmp / "notes.wav").write_text("these are lyrics, not audio\n" * 20)
        return ["render", tmp / "notes.wav", "-o", out], ["notes.wav", "not an audio file"]
    if kind == "0-byte file":
        (tmp / "empty.wav").write_bytes(b"")
        return ["render", tmp / "empty.wav", "-o", out], ["empty.wav", "empty"]
    if kind == "WAV with zero frames":
        sf.write(tmp / "zero.wav", np.zeros((0, 1), np.float32), 44100)
        return ["render", tmp / "zero.wav", "-o", out], ["zero.wav", "0 frames"]
    if kind == "1-sample WAV":
        sf.write(tmp / "one.wav", np.zeros((1, 1), np.float32), 44100)
        return ["render", tmp / "one.wav", "-o", out], ["one.wav", "too short", str(MIN_SAMPLES)]
    if kind == "NaN samples":
        x = np.full((4096, 1), 0.1, np.float32)
        x[1000] = np.nan
        sf.write(tmp / "nan.wav", x, 44100, subtype="FLOAT")
        return ["render", tmp / "nan.wav", "-o", out], ["nan.wav", "NaN"]
    if kind == "unknown preset":
        return ["render", good, "-o", out, "--preset", "wram"], ["'wram'", ", ".join(SHIPPED)]
    if kind == "amount out of range":
        return ["render", good, "-o", out, "--preset", "warm", "--amount", "3"], ["amount", "between 0 and 2"]
    if kind == "output folder under a file":
        (tmp / "file.txt").write_text("a file, not a folder")
        return ["render", good, "-o", tmp / "file.txt" / "out.wav"], ["file.txt", "not a folder"]
    if kind == "unwritable output folder":
        locked = tmp / "locked"
        locked.mkdir()
        locked.chmod(0o500)  # as root this does not stop writing: the test denies it by hand (see below)
        return ["render", good, "-o", locked / "out.wav"], ["locked", "writable"]
    if kind == "missing output folder":
        return ["render", good, "-o", tmp / "no" / "such" / "out.wav"], ["does not exist"]
    if kind == "output is the input":
        return ["render", good, "-o", good, "--force"], ["vocal.wav", "is the input"]
    if kind == "out-dir writes onto the input":
        return ["render", good, "--out-dir", tmp, "--force"], ["vocal.wav", "is the input"]
    if kind == "-o with several inputs":
        return ["render", good, good, "-o", out], ["-o takes a single input"]
    if kind == "missing model file":
        return ["render", good, "-o", out, "--model", tmp / "nomodel.pt"], ["nomodel.pt"]
    if kind == "FLAC at 32-bit float":
        return ["render", good, "-o", tmp / "out.flac", "--bit-depth", "32f"], ["FLAC", "--bit-depth"]
    if kind == "unknown option":
        return ["render", good, "-o", out, "--prest", "warm"], ["--prest"]
    if kind == "missing settings file":
        return ["render", good, "-o", out, "--params", tmp / "nope.json"], ["nope.json", "not found"]
    raise AssertionError(kind)


BAD_INPUTS = [
    "missing file", "directory (params)", "folder without audio", "text file named .wav", "0-byte file",
    "WAV with zero frames", "1-sample WAV", "NaN samples", "unknown preset", "amount out of range",
    "output folder under a file", "unwritable output folder", "missing output folder", "output is the input",
    "out-dir writes onto the input", "-o with several inputs", "missing model file", "FLAC at 32-bit float",
    "unknown option", "missing settings file",
]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_gives_one_line_and_changes_nothing(capsys, tmp_path, mono, kind, monkeypatch):
    argv, needles = _bad_input(kind, tmp_path, mono)
    if kind == "unwritable output folder" and os.geteuid() == 0:
        # Root writes anywhere, so the permission check would pass: deny it, as the kernel would for a user.
        real_access, locked = os.access, (tmp_path / "locked").resolve()
        monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if Path(path).resolve() == locked
                            and mode & os.W_OK else real_access(path, mode, *a, **k))
    before = snapshot(tmp_path)
    try:
        code, out, err = run(capsys, *argv)
    finally:
        if (tmp_path / "locked").exists():
            (tmp_path / "locked").chmod(0o700)
    after = snapshot(tmp_path)
    if (tmp_path / "locked").exists():  # the chmod back is ours, not the command's
        before.pop("locked"), after.pop("locked")
    assert_one_line_error(code, err, *needles)
    assert out == ""
    assert after == before


# ---------------------------------------------------------------------------
# real processes: no traceback reaches the user
# ---------------------------------------------------------------------------

def test_subprocess_error_is_one_line(tmp_path):
    (tmp_path / "lyrics.wav").write_text("not audio")
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "infer.py", "render", str(tmp_path / "lyrics.wav"), "-o",
                           str(tmp_path / "out.wav")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stderr, "lyrics.wav", "not an audio file")
    assert proc.returncode == 2
    assert snapshot(tmp_path) == before


def test_subprocess_params_is_valid_json(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dmst.cli", "params", str(EXAMPLE), "--preset", "bright"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    settings = schema.from_json(proc.stdout)
    assert settings["eq"]["high_shelf_freq_hz"] == pytest.approx(10000.0)


def test_params_output_works_with_jq_as_the_readme_shows(tmp_path):
    """`dmst params vocal.wav | jq .compressor` (README): skipped, and reported so, where jq is not installed."""
    if not shutil.which("jq"):
        pytest.skip("jq is not installed: the README's `| jq` example is not checked here")
    proc = subprocess.run([sys.executable, "-m", "dmst.cli", "params", str(EXAMPLE), "--preset", "bright"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    jq = subprocess.run(["jq", ".eq.high_shelf_freq_hz"], input=proc.stdout, capture_output=True, text=True)
    assert jq.returncode == 0 and float(jq.stdout) == pytest.approx(10000.0)
    jq = subprocess.run(["jq", ".compressor"], input=proc.stdout, capture_output=True, text=True)
    assert jq.returncode == 0 and set(json.loads(jq.stdout)) == {p.name for p in schema.SCHEMA if p.group == "compressor"}


def test_plot_draws_the_new_stages_from_the_effects():
    """dmst plot's de-esser panel peaks at frequency_hz and its space panel shows echoes every time_ms, each
    20 log10(feedback) dB (within 0.3 dB) below the one before (wide loop filters), as the delay's definition says."""
    import matplotlib.pyplot as plt

    from dmst.cli import draw_settings

    settings = schema.default_dict()
    settings["deesser"].update(frequency_hz=7000.0, range_db=6.0)
    settings["delay"].update(time_ms=200.0, feedback=0.5, low_pass_hz=20000.0, high_pass_hz=20.0, send_db=-12.0)
    settings["reverb"].update(send_db=-20.0)
    fig = draw_settings(settings, 48000)
    try:
        by_title = {ax.get_title().split(" ")[0]: ax for ax in fig.axes}
        side = by_title["De-esser"].lines[0]
        f, g = side.get_xdata(), side.get_ydata()
        assert f[np.argmax(g)] == pytest.approx(7000.0, rel=0.01) and g.max() == pytest.approx(0.0, abs=0.05)
        space = by_title["Space:"]
        assert len(space.lines) == 2  # the delay and the reverb
        t, e = space.lines[0].get_xdata(), space.lines[0].get_ydata()
        peaks = [e[np.argmin(np.abs(t - k * 0.2)) - 1: np.argmin(np.abs(t - k * 0.2)) + 2].max() for k in (1, 2, 3, 4)]
        # Both channels' energy (+3 dB) at the send level; the loop filters (20 Hz-20 kHz at 48 kHz) take up to 1 dB
        # off the first pass of a full-band impulse and about 0.2 dB off each later one.
        assert peaks[0] - 10 * np.log10(2) == pytest.approx(-12.0, abs=1.0)
        assert np.diff(peaks) == pytest.approx([20 * np.log10(0.5)] * 3, abs=0.3)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("slope", [6, 24])
def test_plot_draws_the_eq_and_the_saturation_as_the_effects_define_them(slope):
    """The EQ panel is scipy's Butterworth high-pass of order slope / 6 (within 0.05 dB, 20 Hz-2 kHz, other bands
    neutral); the saturation panel is the documented curve tanh(g x / C + b) - tanh(b) at unit slope at 0, mixed."""
    import matplotlib.pyplot as plt
    import scipy.signal as ss

    from dmst.cli import draw_settings

    settings = schema.default_dict()
    settings["eq"].update(high_pass_freq_hz=150.0, high_pass_slope_db=float(slope))
    settings["saturation"].update(drive_db=12.0, asymmetry=0.5, mix=0.8)
    fig = draw_settings(settings, 48000)
    try:
        by_title = {ax.get_title().split(" ")[0]: ax for ax in fig.axes}
        eq = by_title["EQ"]
        assert f"{slope} dB/octave" in eq.get_title()
        f, g = eq.lines[0].get_xdata(), eq.lines[0].get_ydata()
        pick = (f > 20) & (f < 2000)  # the 18 kHz low-pass takes under 0.001 dB here
        _, h = ss.sosfreqz(ss.butter(slope // 6, 150.0, "highpass", fs=48000, output="sos"), worN=f[pick], fs=48000)
        assert np.abs(g[pick] - 20 * np.log10(np.abs(h))).max() < 0.05
        sat = [line for line in by_title["Saturation"].lines if "drive" in str(line.get_label())][0]
        x, y = sat.get_xdata(), sat.get_ydata()
        gain, bias, ceiling = 10 ** (12 / 20), 0.6 * 0.5, 10 ** (12 / 20)  # MAX_BIAS 0.6, ceiling +12 dBFS (documented)
        wet = (np.tanh(gain * x / ceiling + bias) - np.tanh(bias)) / (gain / ceiling * (1 - np.tanh(bias) ** 2))
        np.testing.assert_allclose(y, 0.2 * x + 0.8 * wet, atol=1e-9)
    finally:
        plt.close(fig)
