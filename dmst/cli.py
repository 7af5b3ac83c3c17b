"""The ``dmst`` command line: render vocals, print and edit their settings, list presets, plot.

    dmst render vocal.wav -o mixed.wav --preset warm --amount 0.5
    dmst params vocal.wav > settings.json      # edit it, then:
    dmst render vocal.wav -o mixed.wav --params settings.json
    dmst presets
    dmst plot vocal.wav -o settings.png
    dmst train ... / dmst fit ... / dmst serve # handed to train.py / dmst.fit / dmst.serve

Every user error (a missing or broken file, an unknown preset, a typo in a settings
file, an output that would overwrite something) ends with one line on stderr,
``dmst: error: <what is wrong>; <what to do>``, exit status 2, and nothing written.
Bugs still raise with a traceback, so they get reported rather than hidden.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXIT_USER_ERROR = 2


class CliError(Exception):
    """A user error found by the command line itself (bad option combination...)."""


class UsageError(CliError):
    """An argparse error, turned into one line instead of usage text plus exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------

def _settings_options(p: argparse.ArgumentParser, with_params_file: bool = True) -> None:
    """Options choosing the settings: model, presets, amount, settings file."""
    p.add_argument("--model", default="default", metavar="M",
                   help="model file or training run folder ('default': the model bundled with dmst)")
    p.add_argument("--preset", action="append", default=[], metavar="P",
                   help="apply a preset on top of the settings (repeat, or separate with commas, to stack in order; "
                        "see 'dmst presets')")
    p.add_argument("--amount", type=float, default=1.0, metavar="A",
                   help="how much of the presets to apply, 0..2 (0: none, 1: as written, 2: twice) [1]")
    p.add_argument("--presets", action="append", default=[], metavar="FILE.yaml",
                   help="your own presets file, merged over the built-in ones (same name replaces)")
    if with_params_file:
        p.add_argument("--params", metavar="FILE.json",
                       help="render exactly these settings (from 'dmst params' or --save-params) instead of the model's")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="dmst", description="Vocal mixing as readable settings: EQ, compressor and saturation "
                                              "predicted for your vocal, rendered by a fixed console.")
    parser.add_argument("--version", action="version", version=f"dmst {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("render", help="mix vocal files", description="Mix vocal files with the model's settings "
                       "(or a settings file), optionally nudged by presets. Full length, own sample rate. Channels: "
                       "those of the mixes the model learned from (a mono vocal becomes centred stereo for a model "
                       "trained on stereo mixes); with --params, those its meta.output_channels records, else the input's.")
    r.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders of audio files")
    r.add_argument("-o", "--output", metavar="OUT", help="output file (one input only); .wav or .flac")
    r.add_argument("--out-dir", metavar="DIR", help="output folder: each output keeps its input's name")
    _settings_options(r)
    r.add_argument("--save-params", metavar="FILE.json", help="also write the settings used (after presets) as JSON")
    r.add_argument("--sample-rate", type=int, metavar="SR", help="resample the output to SR Hz [the input's rate]")
    r.add_argument("--format", choices=("wav", "flac"), help="output format [from -o's name, else the input's if "
                   "wav/flac, else wav]")
    r.add_argument("--bit-depth", choices=("16", "24", "32f"), default="24", help="16 or 24-bit integer, or 32-bit "
                   "float (wav only) [24]")
    r.add_argument("--ceiling", type=float, default=None, metavar="DBTP",
                   help="the true-peak limiter's ceiling (ITU-R BS.1770, 4x oversampled) for this render, -12 to 0 "
                        "dBTP; sets limiter.ceiling_dbtp [the settings', -1 unless changed]; 0 turns the limiter off")
    r.add_argument("--no-limiter", action="store_true",
                   help="turn the true-peak limiter off (limiter.ceiling_dbtp 0): a true peak above --ceiling [0] "
                        "is then only reported")
    r.add_argument("--limit", action="store_true",
                   help="deprecated: the limiter keeps renders under the ceiling; with --no-limiter, the old plain "
                        "gain change (the whole file turned down to peak at --ceiling)")
    r.add_argument("--force", action="store_true", help="overwrite existing outputs (never an input)")
    r.set_defaults(func=cmd_render)

    p = sub.add_parser("params", help="print the settings for a vocal as JSON",
                       description="Print the settings the model predicts for a vocal (after presets) as JSON, in "
                                   "physical units. Edit it and pass it to 'dmst render --params'.")
    p.add_argument("input", metavar="IN", help="audio file")
    _settings_options(p, with_params_file=False)
    p.set_defaults(func=cmd_params)

    s = sub.add_parser("presets", help="list the presets and what they change")
    s.add_argument("--presets", action="append", default=[], metavar="FILE.yaml",
                   help="your own presets file, merged over the built-in ones")
    s.set_defaults(func=cmd_presets)

    g = sub.add_parser("plot", help="draw the settings for a vocal as a PNG",
                       description="Draw the EQ curves, the gate, compressor, saturation and de-esser curves, the delay "
                                   "and reverb decays and the spectrum before and after, for the settings the model predicts (or --params).")
    g.add_argument("input", metavar="IN", help="audio file")
    _settings_options(g)
    g.add_argument("-o", "--output", required=True, metavar="FILE.png", help="the PNG to write")
    g.add_argument("--force", action="store_true", help="overwrite an existing PNG")
    g.set_defaults(func=cmd_plot)

    # Handed over whole to train.py / dmst.fit (see main); listed here for --help only.
    sub.add_parser("train", help="train a model (train.py; 'dmst train --help')", add_help=False)
    sub.add_parser("fit", help="fit settings to a reference mix (dmst.fit; 'dmst fit --help')", add_help=False)
    sub.add_parser("serve", help="serve dmst over HTTP (dmst.serve; 'dmst serve --help')", add_help=False)
    return parser


# ---------------------------------------------------------------------------
# shared steps
# ---------------------------------------------------------------------------

def _preset_names(args) -> list[str]:
    return [name.strip() for item in args.preset for name in item.split(",") if name.strip()]


def _presets(args):
    """Load presets and check names and amount before any audio work, so mistakes fail fast."""
    from . import schema
    from .presets import apply_presets, load_presets

    presets = load_presets(args.presets)
    names = _preset_names(args)
    apply_presets(schema.default_dict(), names, args.amount, presets)
    return presets, names


def _read_params_file(path: str):
    from . import schema

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"settings file {path} not found; create one with 'dmst params IN > {path}'") from None
    except IsADirectoryError:
        raise CliError(f"settings file {path} is a folder; pass a .json file") from None
    except UnicodeDecodeError:
        raise CliError(f"settings file {path} is not UTF-8 text; pass a .json file from 'dmst params'") from None
    try:
        return schema.from_json(text)
    except schema.ParamError as e:
        raise schema.ParamError(f"settings file {path}: {e}") from None


def settings_layout(text: str) -> int | None:
    """The output layout a settings JSON records (``meta.output_channels``: 1 or 2), or None: the input's.
    ValueError for another value.  ``dmst render --params`` and the service's ``/v1/mix`` with params use it."""
    import json

    meta = json.loads(text).get("meta") or {}
    layout = meta.get("output_channels") if isinstance(meta, dict) else None
    if layout is not None and layout not in (1, 2):
        raise ValueError(f"meta.output_channels must be 1 or 2, got {layout!r}; fix or remove it")
    return layout


def _params_layout(path: str) -> int | None:
    try:
        return settings_layout(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:
        raise CliError(f"settings file {path}: {e}") from None


def _in_layout(audio, channels: int | None):
    """(channels, samples) numpy audio in the output layout: mono copied to both channels, stereo to its mean."""
    import numpy as np

    if channels is None or audio.shape[0] == channels:
        return audio
    mono = audio.mean(axis=0, keepdims=True) if audio.shape[0] != 1 else audio
    return np.ascontiguousarray(np.repeat(mono, channels, axis=0)) if channels > 1 else np.ascontiguousarray(mono)


def _load_model(args):
    from .encoder import load_model

    return load_model(args.model)


def _staging_db(audio, sample_rate: int):
    """The console's measured input gain for one file: measured once, used by the model and the renderer."""
    import torch

    from .effects.gain import staging_gain_db

    return staging_gain_db(torch.from_numpy(audio)[None], sample_rate)


def _settings(model, params, audio, sample_rate, names, amount, presets, staging_db=None):
    """The settings for one file: the model's (or the given) settings with presets on top."""
    import torch

    from .presets import apply_presets

    if params is None:
        params = model.predict(torch.from_numpy(audio), sample_rate, staging_db=None if staging_db is None else staging_db[0])
    return apply_presets(params, names, amount, presets) if names else params


def _render(audio, sample_rate: int, nested, staging_db=None, tail: bool = True):
    """(channels, samples) numpy -> rendered (channels, samples) float32 torch tensor; with a send on, stereo
    and (``tail``) longer than the input by the sends' tail (:func:`dmst.console.render`)."""
    import torch

    from . import console, schema

    with torch.no_grad():
        x = torch.from_numpy(audio)[None]
        flat = schema.stack([nested])
        # A send returns in stereo: a mono take's mix is then stereo, the dry voice centred.
        return console.render(x, sample_rate, flat, staging_db=staging_db,
                              output_channels=2 if console.sends_on(flat) else None, tail=tail)[0]


def _limit(y, sample_rate: int, settings):
    """(channels, samples) -> the true-peak limiter's output at ``sample_rate`` (an exact bypass when nothing is over)."""
    import torch

    from .effects.limiter import limiter

    with torch.no_grad():
        return limiter(y[None], sample_rate, settings["ceiling_dbtp"], settings["release_ms"])[0]


def _meta(args, model, names, source: str, layout: int | None = None) -> dict:
    meta = {"model": model.name if model is not None else None}
    if getattr(args, "params", None):
        meta["params_file"] = Path(args.params).name
    meta.update(presets=names, amount=args.amount, source=source)
    if layout is not None:
        meta["output_channels"] = layout
    return meta


def _note(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"dmst: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------
# dmst render
# ---------------------------------------------------------------------------

def _expand_inputs(items) -> list[Path]:
    from .audio_io import AUDIO_EXTENSIONS, find_audio_files

    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = find_audio_files(path)
            if not found:
                raise CliError(f"folder {path} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}); "
                               "pass audio files or another folder")
            files.extend(found)
        else:
            files.append(path)  # missing or broken files are reported by read_audio, with the reason
    return files


def _output_format(args, source: Path, output: Path | None) -> str:
    """--format, else -o's extension, else the input's (if wav or flac), else wav."""
    if output is not None:
        ext = output.suffix.lower().lstrip(".")
        if ext not in ("wav", "flac"):
            raise CliError(f"output {output} must end in .wav or .flac (dmst writes WAV or FLAC)")
        if args.format and args.format != ext:
            raise CliError(f"output {output} does not match --format {args.format}; make them agree")
        return ext
    if args.format:
        return args.format
    ext = source.suffix.lower().lstrip(".")
    return ext if ext in ("wav", "flac") else "wav"


def _plan_outputs(args, inputs: list[Path]) -> list[tuple[Path, Path, str]]:
    """(input, output, format) for every input, refusing anything unsafe before work starts."""
    from .audio_io import check_format, check_output

    if args.output and args.out_dir:
        raise CliError("give either -o OUT (one input) or --out-dir DIR, not both")
    if not args.output and not args.out_dir:
        raise CliError("say where to write: -o OUT for one input, or --out-dir DIR")
    if args.output and len(inputs) != 1:
        raise CliError(f"-o takes a single input, got {len(inputs)} files; use --out-dir DIR for several")

    plan = []
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"--out-dir {out_dir} is a file, not a folder; choose a folder")
    for source in inputs:
        output = Path(args.output) if args.output else None
        fmt = _output_format(args, source, output)
        check_format(fmt, args.bit_depth)
        if output is None:
            output = out_dir / f"{source.stem}.{fmt}"
        plan.append((source, output, fmt))

    seen = {}
    for source, output, _ in plan:
        key = output.resolve()
        if key in seen:
            raise CliError(f"{seen[key]} and {source} would both be written to {output}; render them to different folders")
        seen[key] = source
        if out_dir is not None and not out_dir.exists():
            _check_creatable(out_dir)  # the folder is made only once everything checks out
        else:
            check_output(output, inputs, args.force)
    return plan


def _check_creatable(folder: Path) -> None:
    import os

    ancestor = next((a for a in folder.parents if a.exists()), Path("."))
    if not ancestor.is_dir():
        raise CliError(f"cannot create output folder {folder}: {ancestor} is a file; choose another folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"cannot create output folder {folder}: {ancestor} is not writable; choose another folder")


def _true_peak_guard(args, y, sample_rate: int, output: Path, ceiling: float, peak: float | None = None):
    """With the limiter off: report (or with --limit, remove) a true peak above ``ceiling``; returns (audio, gain change in dB)."""
    from .audio_io import true_peak_dbfs

    peak = true_peak_dbfs(y, sample_rate) if peak is None else peak
    if not peak > ceiling:
        return y, 0.0
    excess = peak - ceiling
    if args.limit:
        _note(f"{output.name}: true peak {peak:+.2f} dBTP, turned down {excess:.2f} dB to the {ceiling:+.1f} dBTP "
              "ceiling (--limit)")
        return y * 10 ** (-excess / 20), -excess
    _note(f"warning: {output.name} has a true peak of {peak:+.2f} dBTP, {excess:.2f} dB above the "
          f"{ceiling:+.1f} dBTP ceiling, so it may clip; the limiter is off: turn it on (limiter.ceiling_dbtp "
          f"below 0, or --ceiling), or lower output.loudness_lufs by {math.ceil(excess * 10) / 10:.1f} dB "
          "(dmst params, edit, render --params)")
    return y, 0.0


def _limiter_ceiling(args, nested) -> float:
    """The limiter's ceiling for this render: off with --no-limiter, else --ceiling, else the settings'."""
    from . import schema

    if args.no_limiter:
        return schema.LIMITER_OFF_DBTP
    return nested["limiter"]["ceiling_dbtp"] if args.ceiling is None else args.ceiling


def cmd_render(args) -> int:
    from tqdm import tqdm

    from ._torchaudio import resample

    from . import schema
    from .audio_io import check_input, check_output, read_audio, true_peak_dbfs, write_audio, write_bytes

    if args.sample_rate is not None and not 8000 <= args.sample_rate <= 384000:
        raise CliError(f"--sample-rate {args.sample_rate} is out of range; use 8000 to 384000 Hz")
    if args.ceiling is not None and not (math.isfinite(args.ceiling) and -12.0 <= args.ceiling <= 0.0):
        raise CliError(f"--ceiling {args.ceiling:g} is out of range; use -12 to 0 dBTP (e.g. -1 for streaming; "
                       "0 turns the limiter off)")
    if args.limit and not args.no_limiter:
        _note("--limit is deprecated and has no effect: the true-peak limiter keeps renders under the ceiling "
              "(limiter.ceiling_dbtp, --ceiling); with --no-limiter it still turns a file down as before")
    presets, names = _presets(args)
    params = _read_params_file(args.params) if args.params else None
    layout = _params_layout(args.params) if args.params else None
    inputs = _expand_inputs(args.inputs)
    for source in inputs:  # headers first: a wrong input is the first thing to report
        check_input(source)
    plan = _plan_outputs(args, inputs)
    if args.save_params:
        if len(inputs) != 1:
            raise CliError(f"--save-params takes a single input, got {len(inputs)} files; render them one by one")
        if Path(args.save_params).resolve() == plan[0][1].resolve():
            raise CliError("--save-params and the audio output are the same file; choose another name")
        check_output(args.save_params, inputs + ([Path(args.params)] if args.params else []), args.force)

    from .effects._llvm import compile_render_kernels
    from .threads import reuse_freed_memory, use_threads_for_rendering

    use_threads_for_rendering()  # torch on one thread, the compiled loops on the cores (as dmst serve does)
    reuse_freed_memory()
    with ThreadPoolExecutor(max_workers=1) as pool:  # the kernels compile while the files are read
        compiling = pool.submit(compile_render_kernels)
        # Read every input before writing anything: a broken file stops the run with nothing written.
        first = read_audio(inputs[0])
        for source in inputs[1:]:
            read_audio(source)
        model = _load_model(args) if params is None else None
        compiling.result()
    if model is not None:
        layout = model.output_channels  # the layout of the mixes it learned from (None: the input's)
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)

    for i, (source, output, fmt) in enumerate(tqdm(plan, desc="dmst render", unit="file", file=sys.stderr,
                                                    disable=None, leave=False)):
        audio, sample_rate, _ = first if i == 0 else read_audio(source)
        staging_db = _staging_db(audio, sample_rate)  # on the file as it is, as training measures it
        nested = _settings(model, params, audio, sample_rate, names, args.amount, presets, staging_db)
        ceiling = _limiter_ceiling(args, nested)
        nested = {g: dict(v) for g, v in nested.items()}
        nested["limiter"]["ceiling_dbtp"] = ceiling
        y = _render(_in_layout(audio, layout), sample_rate, nested, staging_db)
        out_rate = args.sample_rate or sample_rate
        limiting = ceiling < schema.LIMITER_OFF_DBTP
        if out_rate != sample_rate:
            y = resample(y, sample_rate, out_rate, lowpass_filter_width=64, rolloff=0.9475937167399596,
                            resampling_method="sinc_interp_kaiser", beta=14.769656459379492)
            if limiting:  # resampling moves the inter-sample peaks: the limiter again, at the output rate
                y = _limit(y, out_rate, nested["limiter"])
        warn_at = schema.LIMITER_OFF_DBTP if args.ceiling is None or not args.no_limiter else args.ceiling
        if limiting:  # the limiter kept the render under its ceiling
            write_audio(output, y, out_rate, format=fmt, bit_depth=args.bit_depth, inputs=inputs, force=args.force)
            limit_db = 0.0
        elif args.limit:  # the check may change the audio: it comes first
            y, limit_db = _true_peak_guard(args, y, out_rate, output, warn_at)
            write_audio(output, y, out_rate, format=fmt, bit_depth=args.bit_depth, inputs=inputs, force=args.force)
        else:  # the check only warns: it runs while the file is written (both release the GIL), and reports after
            with ThreadPoolExecutor(max_workers=1) as pool:
                writing = pool.submit(write_audio, output, y, out_rate, format=fmt, bit_depth=args.bit_depth,
                                      inputs=inputs, force=args.force)
                peak = true_peak_dbfs(y, out_rate)
                writing.result()
            _, limit_db = _true_peak_guard(args, y, out_rate, output, warn_at, peak)
        if args.save_params:
            saved = {g: dict(v) for g, v in nested.items()}
            if limit_db:  # the --limit gain is part of what was rendered: keep the file reproducible
                lo = schema.BY_KEY["output.loudness_lufs"].minimum
                saved["output"]["loudness_lufs"] = max(lo, saved["output"]["loudness_lufs"] + limit_db)
            meta = _meta(args, model, names, source.name, layout)
            if limit_db:
                meta["limit_db"] = limit_db
            text = schema.to_json(saved, **meta) + "\n"
            write_bytes(args.save_params, text.encode("utf-8"), inputs=inputs, force=args.force)
        _note(f"wrote {output}")
    return 0


# ---------------------------------------------------------------------------
# dmst params / presets
# ---------------------------------------------------------------------------

def cmd_params(args) -> int:
    from . import schema
    from .audio_io import read_audio

    presets, names = _presets(args)
    audio, sample_rate, _ = read_audio(args.input)
    model = _load_model(args)
    nested = _settings(model, None, audio, sample_rate, names, args.amount, presets)
    sys.stdout.write(schema.to_json(nested, **_meta(args, model, names, Path(args.input).name, model.output_channels)) + "\n")
    return 0


def cmd_presets(args) -> int:
    from .presets import describe_preset, load_presets

    presets = load_presets(args.presets)
    lines = []
    for name, preset in presets.items():
        origin = "" if preset.source == "built-in" else f"  [{preset.source}]"
        lines.append(f"{name}: {preset.description}{origin}")
        lines.extend(f"    {line}" for line in describe_preset(preset).splitlines())
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ---------------------------------------------------------------------------
# dmst plot
# ---------------------------------------------------------------------------

def _average_spectrum_db(x, sample_rate: int, n_fft: int = 4096):
    """Mean power spectrum (dB) of (channels, samples) audio, channels summed to mono; with its frequencies."""
    import torch

    mono = x.mean(dim=0)
    if mono.shape[-1] < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.shape[-1]))
    spec = torch.stft(mono, n_fft, hop_length=n_fft // 2, window=torch.hann_window(n_fft), return_complex=True)
    power = spec.abs().pow(2).mean(dim=-1)
    freqs = torch.fft.rfftfreq(n_fft, 1 / sample_rate)
    return freqs.numpy(), (10 * torch.log10(power + 1e-12)).numpy()


def draw_settings(nested, sample_rate: int, before=None, after=None):
    """A matplotlib figure of the settings (and spectra of ``before``/``after`` audio when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .effects.compressor import gain_computer
    from .effects.eq import parametric_eq
    from .effects.post_eq import post_eq
    from .effects.responses import magnitude_response_db
    from .effects.saturation import transfer_curve

    fig, axes = plt.subplots(3, 2, figsize=(12, 12.5))
    (ax_eq, ax_comp), (ax_sat, ax_ds), (ax_space, ax_spec) = axes

    # EQ magnitude responses: an impulse through the effects themselves (the render path), its spectrum.
    freqs, mag = magnitude_response_db(parametric_eq, sample_rate, nested["eq"])
    _, post = magnitude_response_db(post_eq, sample_rate, nested["post_eq"])
    band = freqs >= 10
    ax_eq.semilogx(freqs[band], mag[band], color="C0", label="EQ")
    ax_eq.semilogx(freqs[band], post[band], color="C4", lw=1, label="post-compressor EQ")
    ax_eq.semilogx(freqs[band], (mag + post)[band], color="0.3", lw=0.8, ls=":", label="both")
    ax_eq.legend(loc="lower right", fontsize=8)
    ax_eq.axhline(0, color="0.6", lw=0.8)
    # Frame the musical range: the filters' slopes run off towards -inf at the edges.
    audible = (freqs >= 20) & (freqs <= min(20000, 0.45 * sample_rate))
    ax_eq.set(title=f"EQ (high-pass {nested['eq']['high_pass_slope_db']:g} dB/octave)", xlabel="frequency (Hz)", ylabel="gain (dB)", xlim=(10, sample_rate / 2),
              ylim=(max(-36, min(-15, mag[audible].min() - 3)), max(15, mag[audible].max() + 3)))
    ax_eq.grid(True, which="both", alpha=0.3)

    # Compressor static curve (level at the compressor, i.e. after gain staging and EQ).
    c = nested["compressor"]
    level = torch.linspace(-80, 6, 500, dtype=torch.float64)
    out = level + gain_computer(level, c["threshold_db"], c["ratio"], c["knee_db"]) + c["makeup_gain_db"]
    ax_comp.plot(level, level, color="0.6", lw=0.8, ls="--", label="1:1")
    ax_comp.plot(level, out, color="C1", label=f"ratio {c['ratio']:.2g}:1, make-up {c['makeup_gain_db']:+.1f} dB")
    ax_comp.axvline(c["threshold_db"], color="C3", lw=1, label=f"threshold {c['threshold_db']:.1f} dBFS")
    ax_comp.axvspan(c["threshold_db"] - c["knee_db"] / 2, c["threshold_db"] + c["knee_db"] / 2, color="C3", alpha=0.12,
                    label=f"knee {c['knee_db']:.1f} dB")
    gt = nested["gate"]
    if gt["range_db"] > 0:
        from .effects.gate import gate_curve

        gated = level + gate_curve(level, gt["threshold_db"], gt["ratio"], torch.tensor(gt["range_db"], dtype=torch.float64))
        ax_comp.plot(level, gated, color="C5", lw=1, label=f"gate {gt['threshold_db']:.0f} dBFS, {gt['ratio']:.2g}:1, "
                                                             f"range {gt['range_db']:.0f} dB (before the EQ)")
    ax_comp.set(title=f"Compressor (attack {c['attack_ms']:.3g} ms, release {c['release_ms']:.3g} ms)",
                xlabel="input peak level (dBFS)", ylabel="output level (dBFS)", xlim=(-80, 6))
    ax_comp.legend(loc="upper left", fontsize=8)
    ax_comp.grid(True, alpha=0.3)

    # Saturation: the effect's own static curve, at unit slope at 0 (the effect matches the wet level
    # to the dry one, so only the shape matters), mixed with dry.
    s = nested["saturation"]
    x = torch.linspace(-2, 2, 801, dtype=torch.float64)
    y = transfer_curve(x, s["drive_db"], s["asymmetry"], s["mix"]).numpy()
    x = x.numpy()
    ax_sat.plot(x, x, color="0.6", lw=0.8, ls="--", label="linear")
    ax_sat.plot(x, y, color="C2", label=f"drive {s['drive_db']:.1f} dB, asymmetry {s['asymmetry']:.2f}, "
                                        f"mix {s['mix']:.2f}")
    ax_sat.axvspan(-1, 1, color="0.5", alpha=0.08, label="full scale")
    ax_sat.set(title="Saturation (unit gain at 0)", xlabel="input (x full scale)", ylabel="output", xlim=(-2, 2))
    ax_sat.legend(loc="upper left", fontsize=8)
    ax_sat.grid(True, alpha=0.3)

    _draw_deesser(ax_ds, nested["deesser"], sample_rate)
    _draw_space(ax_space, nested["delay"], nested["reverb"], sample_rate)

    # Average spectra of the vocal before and after.
    if before is not None:
        for audio, label, color in ((before, "before", "0.5"), (after, "after", "C0")):
            f, p = _average_spectrum_db(audio, sample_rate)
            keep = f >= 20
            ax_spec.semilogx(f[keep], p[keep], color=color, label=label)
        ax_spec.set(xlim=(20, sample_rate / 2))
        ax_spec.legend(loc="lower left", fontsize=8)
    lim = nested["limiter"]
    ax_spec.set(title="Average spectrum" + (f" (limiter at {lim['ceiling_dbtp']:+.1f} dBTP)"
                                            if lim["ceiling_dbtp"] < 0 else " (limiter off)"),
                xlabel="frequency (Hz)", ylabel="power (dB)")
    ax_spec.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig


def _draw_deesser(ax, d, sample_rate: int):
    """The de-esser's sidechain band and high band (their magnitude responses) and its static gain-reduction curve,
    from the effect's own filters and curve (dmst.effects.deesser)."""
    import numpy as np
    import torch

    from .effects.deesser import SIDECHAIN_Q, deesser_curve, split_sos
    from .effects.eq import biquad, max_freq, sos_frequency_response

    n_fft = 2**15
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    f = torch.tensor([min(d["frequency_hz"], max_freq(sample_rate))], dtype=torch.float64)
    section = biquad("band_pass", f, 0.0, SIDECHAIN_Q, sample_rate)
    side = sos_frequency_response(torch.stack([section, section], dim=-2).reshape(1, 2, 6), n_fft)[0].abs().numpy()
    low = sos_frequency_response(split_sos(sample_rate, f), n_fft)[0].abs().numpy() ** 2  # applied zero-phase
    keep = freqs >= 100
    ax.semilogx(freqs[keep], 20 * np.log10(np.maximum(side[keep], 1e-6)), color="C6", label="sidechain band")
    ax.semilogx(freqs[keep], 20 * np.log10(np.maximum(np.abs(1 - low[keep]), 1e-6)), color="C7", ls="--",
                label="high band (turned down)")
    ax.set(xlabel="frequency (Hz)", ylabel="band gain (dB)", ylim=(-48, 3), xlim=(100, sample_rate / 2),
           title=f"De-esser at {d['frequency_hz']:.0f} Hz" + ("" if d["range_db"] > 0 else " (off: range 0 dB)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    inset = ax.inset_axes([0.64, 0.1, 0.33, 0.38])
    level = torch.linspace(-70, 0, 200, dtype=torch.float64)
    inset.plot(level, deesser_curve(level, d["threshold_db"], torch.tensor(d["range_db"], dtype=torch.float64)), color="C3")
    inset.set_xlabel("band level (dBFS)", fontsize=7)
    inset.set_ylabel("high-band gain (dB)", fontsize=7)
    inset.tick_params(labelsize=7)
    inset.set_title(f"threshold {d['threshold_db']:.0f} dBFS, range {d['range_db']:.0f} dB", fontsize=7)


def _draw_space(ax, delay, reverb, sample_rate: int, seconds: float = 3.0):
    """The delay's echoes and the reverb's decay: the energy envelope (10 ms windows, both channels) of each send's
    impulse response at its return level, from the effects' own responses (dmst.effects.delay / reverb)."""
    import numpy as np
    import torch

    from .effects._sends import send_gain
    from .effects.delay import delay_response
    from .effects.reverb import reverb_response

    n = int(seconds * sample_rate)
    hop = max(1, sample_rate // 100)

    def envelope(h, level):
        e = (h[0] ** 2).sum(0).numpy()
        e = np.pad(e, (0, -len(e) % hop)).reshape(-1, hop).sum(1) * level**2
        return np.arange(len(e)) * hop / sample_rate, 10 * np.log10(np.maximum(e, 1e-12))

    def t(v):
        return torch.tensor([float(v)], dtype=torch.float64)

    drawn = False
    with torch.no_grad():
        for name, p, color in (("delay", delay, "C8"), ("reverb", reverb, "C9")):
            level = float(send_gain(t(p["send_db"])))
            if level == 0:
                continue
            if name == "delay":
                h = delay_response(n, sample_rate, t(p["time_ms"]), t(p["feedback"]), t(p["low_pass_hz"]),
                                   t(p["high_pass_hz"]), t(p["spread"]), torch.float64)
                label = f"delay {p['time_ms']:.0f} ms, feedback {p['feedback']:.2f}, {p['send_db']:.0f} dB"
            else:
                h = reverb_response(n, sample_rate, t(p["decay_s"]), t(p["damping_hz"]), t(p["width"]),
                                    t(p["pre_delay_ms"]), torch.float64)
                label = f"reverb RT60 {p['decay_s']:.2g} s, pre-delay {p['pre_delay_ms']:.0f} ms, {p['send_db']:.0f} dB"
            ts, e = envelope(h[..., :n], level)
            ax.plot(ts, e, color=color, lw=1, label=label)
            drawn = True
    ax.set(title="Space: delay echoes and reverb decay" + ("" if drawn else " (both sends off)"),
           xlabel="time after the dry sound (s)", ylabel="return energy per 10 ms (dB re an impulse)",
           xlim=(0, seconds), ylim=(-100, 0))
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="upper right", fontsize=8)


def cmd_plot(args) -> int:
    import torch

    from .audio_io import check_output, read_audio, write_bytes

    try:
        import matplotlib  # noqa: F401  (optional dependency)
    except ImportError:
        raise CliError('dmst plot needs matplotlib; install it with: pip install "dmst[plot]"') from None
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise CliError(f"dmst plot writes PNG images; name the output {output.with_suffix('.png').name}")
    presets, names = _presets(args)
    params = _read_params_file(args.params) if args.params else None
    check_output(output, [args.input], args.force)
    audio, sample_rate, _ = read_audio(args.input)
    model = _load_model(args) if params is None else None
    nested = _settings(model, params, audio, sample_rate, names, args.amount, presets)
    after = _render(audio, sample_rate, nested, tail=False)  # drawn against the input, sample for sample
    fig = draw_settings(nested, sample_rate, torch.from_numpy(audio), after)
    title = Path(args.input).name + (f"  (presets: {', '.join(names)} x{args.amount:g})" if names else "")
    fig.suptitle(title, y=1.0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    write_bytes(output, buffer.getvalue(), inputs=[args.input], force=args.force)
    _note(f"wrote {output}")
    return 0


# ---------------------------------------------------------------------------
# dmst train / fit / serve: hand the rest of the command line to their own parsers
# ---------------------------------------------------------------------------

def _passthrough(command: str, rest: list[str]) -> int:
    try:
        if command == "train":
            import train

            entry = train.main
        elif command == "serve":
            from .serve import main as entry
        else:
            from .fit import main as entry
    except ImportError as e:
        raise CliError(f"'dmst {command}' is not available here ({e}); run it from the dmst project folder") from None
    result = entry(rest)
    return result if isinstance(result, int) else 0


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def _user_errors() -> tuple[type[BaseException], ...]:
    """The error classes that mean 'the user asked for something impossible', not 'dmst has a bug'."""
    from .audio_io import AudioFileError
    from .console import AudioError
    from .presets import PresetError
    from .schema import ParamError

    errors = [CliError, ParamError, PresetError, AudioFileError, AudioError, OSError]
    try:
        from .encoder import ModelError

        errors.append(ModelError)
    except ImportError:
        pass
    return tuple(errors)


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        text = f"{e.strerror}{where}; check the path and its permissions"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())  # always one line


def main(argv=None) -> int:
    """Run the dmst command line; returns the exit status (0 ok, 2 user error)."""
    from ._torchaudio import StackError, check_stack

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("train", "fit", "serve"):
            check_stack()
            return _passthrough(argv[0], argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # --help / --version
            return e.code if isinstance(e.code, int) else 0
        check_stack()  # a broken torch/torchaudio install is one line, not a traceback from deep inside
        return args.func(args)
    except StackError as e:  # before _user_errors(), whose imports need torch
        print(f"dmst: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("dmst: interrupted; outputs already finished are complete, nothing half-written was left",
              file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"dmst: error: {_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


def run() -> None:
    """The ``dmst`` program: :func:`main`, then an immediate exit with its status.

    By then every output is written, closed and renamed into place.  A normal
    interpreter shutdown would spend another ~0.45 s tearing down torch's modules
    (measured on a 2-core CPU), which a person would wait for after every command.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):  # e.g. `dmst params x.wav | head -1`: the reader has gone
        pass
    os._exit(code if isinstance(code, int) else 1)


if __name__ == "__main__":
    run()
