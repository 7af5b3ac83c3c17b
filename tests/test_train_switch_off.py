"""Training from scratch starts the sends, the de-esser and the gate a little on (where they have a gradient), and
its end step switches off what the mixes do not have: a model of mixes with a reverb learns the send, a model of
dry mixes predicts it exactly off.  The switch is kept in the model file, through saving, loading and migration.

The mixes are made by the console with known settings (tiny runs: 6 pairs of 2 s, 1 s crops, 3 epochs).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

import train
from dmst import schema
from dmst.cli import main as dmst_main
from dmst.console import render
from dmst.encoder import DmstModel, Encoder, ModelError, load_model, model_from_checkpoint, read_checkpoint
from dmst.encoder.model import migrate_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--epochs", "3", "--batch-size", "2", "--crop-seconds", "1.0", "--quiet", "--lr", "3e-3", "--workers", "1"]
TAKE = ROOT / "examples" / "and_its_all.wav"


def make_pairs(folder: Path, reverb_send_db: float | None, seconds: float = 2.0) -> Path:
    """Six pairs (2 s from each example, twice): stereo mixes with a presence boost and, if given, a 0.8 s reverb
    at ``reverb_send_db``, bounced with its tail as an engineer delivers it."""
    target = schema.default_dict()
    target["eq"]["presence_gain_db"] = 4.0
    if reverb_send_db is not None:
        target["reverb"].update(send_db=reverb_send_db, decay_s=0.8)
    (folder / "raw").mkdir(parents=True)
    (folder / "mixed").mkdir()
    for wav in sorted((ROOT / "examples").glob("*.wav")):
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
        n = int(seconds * sr)
        for i in range(2):
            part = x[i * n:(i + 1) * n]
            with torch.no_grad():
                mixed = render(torch.from_numpy(part.T.copy())[None], sr, schema.stack([target]), output_channels=2,
                               tail=True)[0]
            sf.write(folder / "raw" / f"{wav.stem}_{i}.wav", part, sr, subtype="FLOAT")
            sf.write(folder / "mixed" / f"{wav.stem}_{i}.wav", mixed.T.numpy(), sr, subtype="FLOAT")
    return folder


@pytest.fixture(scope="module")
def dry_data(tmp_path_factory):
    return make_pairs(tmp_path_factory.mktemp("dry") / "data", None)


def predicted(run: Path) -> dict:
    x, sr = sf.read(TAKE, dtype="float32", always_2d=True)
    return load_model(run / "model.pt").predict(x.T, sr)


def test_from_scratch_on_mixes_with_a_reverb_the_model_learns_the_send(tmp_path):
    """Mixes with a -14 dB reverb: the send starts at -30 dB (the training start), training raises it, and the
    end step keeps it on (without it the validation loss is far more than 0.5 % higher)."""
    data = make_pairs(tmp_path / "data", -14.0)
    run = tmp_path / "run"
    assert train.main(["--data", str(data), "--out", str(run), *RUN]) == 0
    ckpt = read_checkpoint(run / "model.pt")
    record = ckpt["meta"]["switch_off"]
    assert "reverb.send_db" not in ckpt.get("switched_off", []) and "reverb.send_db" not in record["switched_off"]
    assert record["loss_change"]["reverb.send_db"] > 0.005  # what switching it off would have cost
    assert predicted(run)["reverb"]["send_db"] > -30.0  # above where it started, far above its bottom (-60, off)
    assert json.loads((run / "metrics.json").read_text())["switch_off"] == record


def test_from_scratch_on_dry_mixes_the_model_predicts_the_sends_exactly_off(dry_data, tmp_path, capsys):
    """Dry mixes: training turns the sends down from their start but not to off; the end step switches them off,
    so the model predicts -60 dB exactly (dmst params writes it so), and a mono take renders centred."""
    run = tmp_path / "run"
    assert train.main(["--data", str(dry_data), "--out", str(run), *RUN]) == 0
    assert "switched off (less than 0.5 % of the validation loss each): delay.send_db, reverb.send_db" in capsys.readouterr().out
    ckpt = read_checkpoint(run / "model.pt")
    assert {"delay.send_db", "reverb.send_db"} <= set(ckpt["switched_off"])
    logits = ckpt["state_dict"]["default_logits"]
    start = schema.TRAINING_START["reverb.send_db"]
    assert float(torch.sigmoid(logits[schema.KEYS.index("reverb.send_db")])) < start  # turned down, not to off
    assert dmst_main(["params", str(TAKE), "--model", str(run / "model.pt")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["reverb"]["send_db"] == -60.0 and doc["delay"]["send_db"] == -60.0
    y = tmp_path / "y.wav"
    assert dmst_main(["render", str(TAKE), "--model", str(run / "model.pt"), "-o", str(y), "--bit-depth", "32f"]) == 0
    audio, _ = sf.read(y, dtype="float32", always_2d=True)
    assert audio.shape[1] == 2 and (audio[:, 0] == audio[:, 1]).all()  # no return: a centred dry vocal
    # Killed after the last epoch, before the end step: --resume does the step, and only it.
    model = load_model(run / "model.pt")
    model.switched_off, model.meta = (), {k: v for k, v in model.meta.items() if k != "switch_off"}
    model.save(run / "model.pt")
    assert train.main(["--data", str(dry_data), "--out", str(run), "--resume", "--quiet"]) == 0
    again = read_checkpoint(run / "model.pt")
    assert again["switched_off"] == ckpt["switched_off"] and torch.equal(again["state_dict"]["default_logits"], logits)
    assert train.main(["--data", str(dry_data), "--out", str(run), "--resume", "--quiet"]) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize("init", ["default", "v2"])
def test_fine_tuning_the_default_on_dry_mixes_leaves_its_sends_exactly_off(dry_data, tmp_path, init):
    """The bundled model has its reverb send on; the old bundled model is a migrated v2 model, whose new rows (the
    sends among them) train from the training start, like a fresh model's.  Fine-tuned on dry mixes, the end step
    switches both models' sends off."""
    run = tmp_path / "run"
    start = "default" if init == "default" else str(Path(__file__).resolve().parent / "data" / "v2_model.pt")
    if init == "default":
        x, sr = sf.read(TAKE, dtype="float32", always_2d=True)
        assert load_model("default").predict(x.T, sr)["reverb"]["send_db"] > -40.0  # on before the fine-tune
    assert train.main(["--data", str(dry_data), "--out", str(run), "--init", start, *RUN]) == 0
    ckpt = read_checkpoint(run / "model.pt")
    assert "reverb.send_db" not in ckpt.get("migrated", {}).get("defaults", [])  # trained, not pinned as migrated
    assert {"delay.send_db", "reverb.send_db"} <= set(ckpt["switched_off"])
    p = predicted(run)
    assert p["reverb"]["send_db"] == -60.0 and p["delay"]["send_db"] == -60.0


def _model_with_a_reverb(switched_off=()) -> DmstModel:
    encoder = Encoder(training_start=True)
    with torch.no_grad():  # as training would leave it: the reverb send learned at about -20 dB
        encoder.default_logits[schema.KEYS.index("reverb.send_db")] = 0.7
    return DmstModel(encoder, name="m", switched_off=switched_off)


def test_a_switched_off_effect_survives_save_load_and_migration(tmp_path):
    x, sr = sf.read(TAKE, dtype="float32", always_2d=True)
    assert _model_with_a_reverb().predict(x.T, sr)["reverb"]["send_db"] > -25.0  # on, without the switch
    _model_with_a_reverb(("reverb.send_db",)).save(tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")
    assert model.switched_off == ("reverb.send_db",)
    assert model.predict(x.T, sr)["reverb"]["send_db"] == -60.0
    # A file written before a late row existed (compressor.feedback) is migrated: the switch stays.
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    i = schema.KEYS.index("compressor.feedback")
    keep = [j for j in range(schema.NUM_PARAMS) if j != i]
    old = {**ckpt, "schema": [row for j, row in enumerate(ckpt["schema"]) if j != i],
           "state_dict": {k: (v[keep] if k in ("default_logits", "head.3.weight", "head.3.bias") else v)
                          for k, v in ckpt["state_dict"].items()}}
    migrated = migrate_checkpoint(old)
    assert migrated["migrated"]["from_version"] == schema.SCHEMA_VERSION and "compressor.feedback" in migrated["migrated"]["defaults"]
    again = model_from_checkpoint(migrated)
    assert again.switched_off == ("reverb.send_db",) and again.predict(x.T, sr)["reverb"]["send_db"] == -60.0
    # ... and training from it (--init) starts from its network, where the send is alive again.
    with torch.no_grad():
        assert float(again.encoder(torch.zeros(1, sr))[0, schema.KEYS.index("reverb.send_db")]) > 0.6
    with pytest.raises(ModelError, match="switched_off"):
        model_from_checkpoint({**ckpt, "switched_off": ["reverb.nonsense"]})
