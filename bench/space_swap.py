"""How much of the space benchmark's MR-STFT is the reverb's fine structure?  A swap analysis.

    python bench/space_swap.py [--work runs/foreign_space]

The foreign engineer of ``bench/quality.py --space`` uses pedalboard's Freeverb (JUCE's), a
linear, time-invariant network of combs and all-passes.  Its "best single setting" row renders
with that same reverb, so its tail lines up with the mix's sample for sample; any other reverb
(dmst's seeded filtered noise, an FDN, a room) makes a tail with the same decay but other noise.
This script renders each test song through the foreign chain at the engineer's own settings
(``truth.json``), with only the reverb's impulse response replaced, and measures what that costs:

1. ``freeverb IR``: Freeverb's own impulse response, convolved: checks that the swap reproduces
   the mix (MR-STFT near 0; Freeverb is LTI).
2. ``fine structure redrawn``: the same response's magnitude in every 256-sample STFT frame and
   bin, with fresh random phases: the same time-frequency envelope (decay, colour, level), other
   noise.  What any reverb pays that does not copy Freeverb's structure, however well its
   envelope matches.
3. ``dmst reverb, matched``: dmst's reverb (``dmst.effects.reverb.reverb_response``) with
   ``decay_s`` and ``damping_hz`` chosen to match Freeverb's octave-band decays (Schroeder
   backward integration, a grid search) and its energy: what dmst's reverb model pays.
4. The foreign engineer's best single setting (``single_setting.json``) with its reverb's fine
   structure redrawn: that row on the footing every non-Freeverb system stands on.

Writes ``bench/results/space_swap.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import signal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import foreign  # noqa: E402
import quality  # noqa: E402

IR_SECONDS = 8.0
FRAME = 256
OCTAVES_HZ = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


def freeverb_ir(sample_rate: int, room: float, damping: float) -> np.ndarray:
    """(2, n) float64 impulse response of pedalboard's Reverb (wet only, width 1) for a mono impulse on both inputs."""
    import pedalboard as pb

    x = np.zeros((2, int(IR_SECONDS * sample_rate)), np.float32)
    x[:, 0] = 1.0
    return pb.Reverb(room_size=room, damping=damping, wet_level=1.0, dry_level=0.0, width=1.0)(x, sample_rate).astype(np.float64)


def redraw_fine_structure(h: np.ndarray, seed: int) -> np.ndarray:
    """``h`` (2, n) with every STFT frame's magnitudes kept and its phases drawn afresh (seeded)."""
    rng = np.random.default_rng(seed)
    _, _, z = signal.stft(h, nperseg=FRAME, noverlap=FRAME * 3 // 4)
    z = np.abs(z) * np.exp(2j * np.pi * rng.random(z.shape))
    _, y = signal.istft(z, nperseg=FRAME, noverlap=FRAME * 3 // 4)
    y = y[:, : h.shape[-1]]
    # keep each channel's energy (the overlap-add of random phases loses a little)
    return y * np.sqrt((h**2).sum(-1, keepdims=True) / np.maximum((y**2).sum(-1, keepdims=True), 1e-30))


def band_rt60(h: np.ndarray, sample_rate: int) -> np.ndarray:
    """RT60 (s) of each octave band of the mono sum of ``h``, by Schroeder integration (T20: -5 to -25 dB)."""
    out = []
    mono = h.mean(0)
    for f in OCTAVES_HZ:
        sos = signal.butter(4, [f / math.sqrt(2), min(f * math.sqrt(2), 0.45 * sample_rate)], "bandpass", fs=sample_rate, output="sos")
        e = signal.sosfiltfilt(sos, mono) ** 2
        edc = np.cumsum(e[::-1])[::-1]
        edc_db = 10 * np.log10(edc / edc[0] + 1e-30)
        i5, i25 = np.argmax(edc_db < -5), np.argmax(edc_db < -25)
        out.append(3.0 * (i25 - i5) / sample_rate)
    return np.array(out)


def dmst_matched_ir(h: np.ndarray, sample_rate: int) -> tuple[np.ndarray, dict]:
    """dmst's reverb response with decay and damping matched to ``h``'s octave-band decays, scaled to ``h``'s energy."""
    from dmst.effects.reverb import reverb_response

    target = band_rt60(h, sample_rate)
    best = None
    for decay in np.geomspace(0.2, 6.0, 40):
        for damping in np.geomspace(1000.0, 20000.0, 30):
            t = decay / (1 + (np.array(OCTAVES_HZ) / damping) ** 2)  # dmst.effects.reverb.band_decays' curve
            err = float(np.mean(np.log(t / target) ** 2))
            if best is None or err < best[0]:
                best = (err, decay, damping)
    _, decay, damping = best
    r = reverb_response(h.shape[-1], sample_rate, torch.tensor([decay], dtype=torch.float64),
                        torch.tensor([damping], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                        dtype=torch.float64)[0].numpy()
    r = np.pad(r, ((0, 0), (0, max(0, h.shape[-1] - r.shape[-1]))))[:, : h.shape[-1]]
    r *= math.sqrt((h**2).sum() / (r**2).sum())
    return r, {"decay_s": float(decay), "damping_hz": float(damping), "freeverb_rt60_s": target.round(3).tolist(),
               "dmst_rt60_s": band_rt60(r, sample_rate).round(3).tolist()}


def render_with_ir(raw: np.ndarray, sample_rate: int, s: dict, stage_db: float, ir: np.ndarray) -> np.ndarray:
    """The foreign chain with Freeverb's return replaced by the convolution of its (pre-delayed) input with ``ir``."""
    return foreign.render(raw, sample_rate, s, stage_db, reverb_ir=ir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / "runs" / "foreign_space"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "space_swap.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    truth = json.loads((work / "truth.json").read_text())
    single = json.loads((work / "single_setting.json").read_text())["best"]
    names = sorted(f.stem for f in (work / "test" / "raw").glob("*.flac"))
    keys = ("mrstft", "mrstft_mid", "mrstft_side", "sibilance_error_db", "tail_energy_error_db", "stereo_width_error_db")
    songs = {}
    for i, name in enumerate(names):
        raw, mixed, sr = quality.load(work / "test", name)
        s, stage = truth[name]["settings"], truth[name]["analysis"]["stage_db"]
        x = raw.double().numpy()
        h = freeverb_ir(sr, s["reverb_room"], s["reverb_damping"])
        h_single = freeverb_ir(sr, single["reverb_room"], single["reverb_damping"])
        matched, fit = dmst_matched_ir(h, sr)
        renders = {
            "freeverb IR": render_with_ir(x, sr, s, stage, h),
            "fine structure redrawn": render_with_ir(x, sr, s, stage, redraw_fine_structure(h, seed=i)),
            "dmst reverb, matched": render_with_ir(x, sr, s, stage, matched),
            "no reverb": foreign.render(x, sr, {**s, "reverb_send_db": -400.0}, stage),
            "single setting": foreign.render(x, sr, single, stage),
            "single setting, fine structure redrawn": render_with_ir(x, sr, single, stage, redraw_fine_structure(h_single, seed=i)),
        }
        rows = {}
        for label, y in renders.items():
            m = quality.metrics(torch.from_numpy(y).float(), mixed, sr, raw)
            rows[label] = {k: round(float(m[k]), 4) for k in keys if k in m}
        songs[name] = {"rows": rows, "dmst_match": fit}
        print(name, {k: v["mrstft"] for k, v in rows.items()}, fit["decay_s"], round(fit["damping_hz"]), flush=True)
    labels = list(songs[names[0]]["rows"])
    mean = {label: {k: round(float(np.mean([songs[n]["rows"][label][k] for n in names])), 3) for k in keys
                    if k in songs[names[0]]["rows"][label]} for label in labels}
    for label, m in mean.items():
        print(f"{label:42s}", "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"mean": mean, "songs": songs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
