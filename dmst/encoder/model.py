"""A trained dmst model: the encoder plus everything needed to use it safely.

Model files are plain ``torch.save`` dicts of tensors, strings and numbers, so they
load with ``weights_only=True`` (no code is unpickled).  They record the schema they
were trained for, the sample rate, library versions, a summary of the training data
and, for models trained since ``output_channels`` existed, the channel layout of the
engineer's mixes they learned from (1 or 2): a model trained on stereo mixes renders
stereo, even from a mono raw.  Older files have none and render in the input's layout.
``switched_off`` lists the effects (:data:`dmst.switches.SWITCHES`) that training's end step found
not worth having on: the model predicts them exactly off (their defaults) whatever its network says.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .. import schema
from .._torchaudio import resample, versions as _stack_versions
from ..effects.gain import staging_gain_db
from ..switches import pin_defaults
from .features import N_BANDS, SAMPLE_RATE, choose_segments
from .network import LIMITER_CEILING as LIMITER, Encoder, training_start_logits

FORMAT = "dmst-model"
FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"


class ModelError(ValueError):
    """A model file that is missing, unreadable or made for another schema."""


def versions() -> dict[str, str]:
    import importlib.metadata

    try:
        dmst_version = importlib.metadata.version("dmst")
    except importlib.metadata.PackageNotFoundError:
        dmst_version = "unknown"
    return {"dmst": dmst_version, **_stack_versions(), "numpy": str(np.__version__)}


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temp file beside ``path``, fsync, then rename: a kill never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_mono_44k(audio, sample_rate: int, staging_db=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(channels, samples) audio -> (staged mono at 44.1 kHz, staging gain in dB measured on the original).

    Pass ``staging_db`` when it is already known (the renderer needs it too) to measure once.
    """
    x = torch.as_tensor(np.asarray(audio) if not torch.is_tensor(audio) else audio, dtype=torch.float32)
    if x.dim() == 1:
        x = x[None]
    if staging_db is None:
        staging_db = staging_gain_db(x[None], sample_rate)[0]
    staging_db = torch.as_tensor(staging_db, dtype=torch.float32).reshape(())
    mono = x.mean(dim=0)
    if sample_rate != SAMPLE_RATE:
        mono = resample(mono, sample_rate, SAMPLE_RATE)
    return mono * 10 ** (staging_db / 20), staging_db


def clamp_to_ranges(params: schema.FlatParams) -> schema.FlatParams:
    """Each value clamped into its schema range (a discrete row's: its nearest choice).

    A saturated sigmoid gives u = 0 or 1, and ``exp(log(lo) + u (log(hi) - log(lo)))``
    can land a rounding error outside the range (``attack_ms`` 100.00000000000004):
    without this, ``dmst render --params`` would refuse the JSON ``dmst params`` wrote.
    """
    return {k: schema.BY_KEY[k].nearest(v) for k, v in params.items()}


def untrained_keys(encoder: Encoder) -> tuple[str, ...]:
    """The :data:`dmst.schema.TRAINING_START` parameters that training has not moved: their output row is still
    zero and their logit still exactly the training start (a fresh encoder's, or a migration's new rows).

    Training starts them a little on, where they have a gradient; a model that has not learned them predicts
    their defaults (the sends off, no de-essing), as a migrated model does.
    """
    start = training_start_logits()
    logits = encoder.default_logits.detach().cpu()
    last = encoder.head[-1]
    weight, bias = last.weight.detach().cpu(), last.bias.detach().cpu()
    keys = []
    for key in schema.TRAINING_START:
        i = schema.KEYS.index(key)
        row_zero = encoder.global_only or (bool((weight[i] == 0).all()) and float(bias[i]) == 0.0)
        if row_zero and float(logits[i]) == float(start[i]):
            keys.append(key)
    return tuple(keys)


class DmstModel:
    """An encoder with its name and training metadata; ``predict`` gives console settings."""

    sample_rate = SAMPLE_RATE

    def __init__(self, encoder: Encoder, name: str = "untrained", meta: dict | None = None, fixed_defaults=None,
                 output_channels: int | None = None, switched_off=()):
        self.encoder = encoder.eval()
        self.name = name
        self.meta = meta or {}
        # Parameters the model was never trained for (a migrated model's new rows; an encoder's rows still at
        # their training start): predicted as exactly their defaults.
        self.fixed_defaults = tuple(untrained_keys(encoder) if fixed_defaults is None else fixed_defaults)
        self.output_channels = output_channels  # 1 or 2; None: the input's layout
        # Effects the end of training switched off (dmst.switches): predicted exactly off, their defaults.
        self.switched_off = tuple(switched_off)

    @property
    def pinned(self) -> tuple[str, ...]:
        """Every parameter the model predicts as exactly its default: the untrained rows and the switched-off effects."""
        return tuple(dict.fromkeys(self.fixed_defaults + self.switched_off))

    @torch.no_grad()
    def predict_normalized(self, audio, sample_rate: int, staging_db=None) -> torch.Tensor:
        """(channels, samples) audio at any rate -> (P,) normalised settings.

        A long file is analysed on a bounded excerpt (see ``choose_segments``); the
        segments' embeddings are averaged before the output head.
        """
        staged, _ = to_mono_44k(audio, sample_rate, staging_db)
        segments = choose_segments(staged)
        device = next(self.encoder.parameters()).device
        e = self.encoder.embed(segments.to(device)).mean(dim=0, keepdim=True)
        return pin_defaults(self.encoder.head_from_embedding(e)[0].cpu(), self.pinned)

    def predict(self, audio, sample_rate: int, staging_db=None) -> dict[str, dict[str, float]]:
        """(channels, samples) audio (numpy or torch) -> nested settings dict in physical units.

        ``staging_db``: the console's input gain for this file, if already measured.
        """
        u = self.predict_normalized(audio, sample_rate, staging_db)
        params = schema.unstack(clamp_to_ranges(schema.denormalize(u[None].double())))[0]
        for key in self.pinned:  # exactly, not through a float32 round trip of the normalised value
            p = schema.BY_KEY[key]
            params[p.group][p.name] = p.default
        return params

    def to(self, device) -> "DmstModel":
        self.encoder.to(device)
        return self

    def checkpoint(self, **extra) -> dict:
        """The model as a weights_only-safe dict."""
        layout = {} if self.output_channels is None else {"output_channels": int(self.output_channels)}
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "config": dict(self.encoder.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "schema_version": schema.SCHEMA_VERSION,
            "schema": [asdict(p) for p in schema.SCHEMA],
            "sample_rate": SAMPLE_RATE,
            "versions": versions(),
            "meta": self.meta,
            **({"migrated": {"from_version": None, "defaults": list(self.fixed_defaults)}} if self.fixed_defaults else {}),
            **layout,
            **({"switched_off": list(self.switched_off)} if self.switched_off else {}),
            **extra,
        }

    def save(self, path, **extra) -> None:
        atomic_save(self.checkpoint(**extra), path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a dmst checkpoint dict safely (weights_only) with one-line errors."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}; pass a model.pt from a training run or 'default'")
    if path.is_dir():
        candidate = path / "model.pt"
        if candidate.exists():
            path = candidate
        else:
            raise ModelError(f"{path} is a folder without model.pt; pass the model file itself")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, not a torch file, unsafe pickle...
        raise ModelError(f"cannot read model file {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(f"{path} is not a dmst model file")
    return migrate_checkpoint(ckpt, path)


def hears_band_shares(state_dict: dict) -> bool:
    """Whether a network's weights include the band shares' map (models and runs since the encoder heard them)."""
    return "spectrum.weight" in state_dict


def migrate_checkpoint(ckpt: dict, path="model") -> dict:
    """A checkpoint dict for the current schema: as it is, or migrated from an older readable version.

    Migration grows the encoder's output head by one row per parameter added since the
    model's schema version (:data:`dmst.schema.ADDED_IN`, or added late to it,
    :data:`dmst.schema.ADDED_LATE`): zero weights and a default
    logit at the parameter's default, or at its :data:`dmst.schema.TRAINING_START`.  Those
    rows are recorded under ``"migrated"``, and the loaded model predicts exactly their
    defaults (so it renders exactly as before) until it is trained again; training starts
    them from those logits.  The ranges and
    scales the model was trained with must equal this dmst's: a normalised output
    means nothing under another range.
    """
    version = ckpt.get("schema_version")
    try:
        schema.check_version(version, f"{path}")
    except schema.ParamError as e:
        raise ModelError(f"{e}; retrain or fine-tune it with this dmst") from None
    rows = ckpt.get("schema", [])
    keys = tuple(row["group"] + "." + row["name"] for row in rows)
    late = set(schema.ADDED_LATE.get(version, ()))
    if tuple(k for k in schema.keys_of_version(version) if k not in late) != tuple(k for k in keys if k not in late) \
            or len(set(keys)) != len(keys):
        raise ModelError(f"{path} was trained for another parameter schema (version {version}); retrain or fine-tune it with this dmst")
    for row, key in zip(rows, keys):
        p = schema.BY_KEY[key]
        if (float(row["minimum"]), float(row["maximum"]), row["scale"], tuple(row.get("choices", ()))) != \
                (p.minimum, p.maximum, p.scale, p.choices):
            raise ModelError(f"{path} was trained with {key} in {row['minimum']:g}..{row['maximum']:g} ({row['scale']}), "
                             f"this dmst has {p.minimum:g}..{p.maximum:g} ({p.scale}); retrain or fine-tune it with this dmst")
    if not hears_band_shares(ckpt["state_dict"]):  # made before the band shares: their map at zero, as it starts
        state = dict(ckpt["state_dict"])
        n_hidden = state["head.1.weight"].shape[0]
        state["spectrum.weight"] = torch.zeros(n_hidden, N_BANDS)
        state["spectrum.bias"] = torch.zeros(n_hidden)
        ckpt = {**ckpt, "state_dict": state}
    if keys == schema.KEYS:
        return ckpt
    old_index = {k: i for i, k in enumerate(keys)}
    state = dict(ckpt["state_dict"])
    default_logits = training_start_logits()
    rows_from = [old_index.get(k) for k in schema.KEYS]

    def grow(t: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        return torch.stack([t[i] if i is not None else fill[j].to(t.dtype) for j, i in enumerate(rows_from)])

    head = [k for k in state if k.startswith("head.") and k.endswith(".weight")]
    last = max(head, key=lambda k: int(k.split(".")[1]))  # the output layer
    bias = last[: -len("weight")] + "bias"
    n_hidden = state[last].shape[1]
    state[last] = grow(state[last], torch.zeros(schema.NUM_PARAMS, n_hidden))
    state[bias] = grow(state[bias], torch.zeros(schema.NUM_PARAMS))
    state["default_logits"] = grow(state["default_logits"], default_logits)
    filled = [k for k in schema.KEYS if k not in old_index]
    return {**ckpt, "state_dict": state, "schema_version": schema.SCHEMA_VERSION,
            "schema": [asdict(p) for p in schema.SCHEMA],
            "migrated": {"from_version": version, "defaults": filled + list(ckpt.get("migrated", {}).get("defaults", []))}}


def model_from_checkpoint(ckpt: dict, name: str | None = None) -> DmstModel:
    """The model of a checkpoint dict (migrated to the current schema if it is older).

    ``.encoder`` is the trainable network: rows a migration added are live in it (they
    start at their defaults or training starts); only the :class:`DmstModel` pins them to the defaults.
    """
    ckpt = migrate_checkpoint(ckpt)
    off = ckpt.get("switched_off", [])
    if not isinstance(off, (list, tuple)) or any(k not in schema.KEYS for k in off):
        raise ModelError(f"{ckpt.get('name', 'model')}: switched_off {off!r} names a parameter this dmst does not have; "
                         "retrain or fine-tune it with this dmst")
    config = dict(ckpt["config"])
    held = ckpt.get("meta", {}).get("limiter_start_dbtp")
    if isinstance(held, (int, float)) and math.isfinite(held) and LIMITER not in config.get("fixed", {}):
        # Trained before the ceiling was a held row: it was held as a learned default's logit (its output row
        # zero), which puts "off" (0 dBTP) at -0.012 dBTP, on.  Held now at the value the run recorded, exactly.
        config["fixed"] = {**config.get("fixed", {}), LIMITER: float(held)}
    encoder = Encoder(**config)
    encoder.load_state_dict(ckpt["state_dict"])
    return DmstModel(encoder, name=name or ckpt.get("name", "model"), meta=ckpt.get("meta", {}),
                     fixed_defaults=ckpt.get("migrated", {}).get("defaults", ()),
                     output_channels=ckpt.get("output_channels"), switched_off=ckpt.get("switched_off", ()))


def resolve_model_path(name_or_path: str | os.PathLike = "default") -> Path:
    if str(name_or_path) == "default":
        return BUNDLED_DIR / "default.pt"
    return Path(name_or_path)


def load_model(name_or_path: str | os.PathLike = "default", device: str = "cpu") -> DmstModel:
    """Load the bundled model (``"default"``) or a model file / training run folder."""
    path = resolve_model_path(name_or_path)
    ckpt = read_checkpoint(path)
    name = "default" if str(name_or_path) == "default" else ckpt.get("name", path.stem)
    return model_from_checkpoint(ckpt, name).to(device)
