"""A foreign engineer: an independent vocal chain and rules of its own, for the quality benchmark only.

Nothing here uses dmst's DSP.  The chain is built from pedalboard's effects (JUCE's
filters and compressor; pedalboard is GPL-3.0, so this stays a bench-only dependency),
numpy and scipy:

    staging to -20 LUFS -> 6 dB/oct high-pass -> compressor -> low-mid bell, presence
    bell, air shelf -> arctan saturation (numpy) -> delivery loudness (numpy BS.1770)

Its order differs from dmst's console (EQ after the compressor, a first-order
high-pass), its compressor is JUCE's (a peak envelope with branching ballistics on the
linear level, a hard knee; pedalboard's attack and release are JUCE's nominal times,
time constants of ms / 2 pi), and its saturation curve is an arctan, not a tanh.
:func:`classic_compressor` is a second foreign compressor of another family, an RMS
feedback design with an opto-style program-dependent release.

:func:`analyse` measures each raw take in numpy/scipy (not dmst's analysis) and
:func:`rules` turns the measurements into settings, as an engineer adapts a chain to
each take.  Settings are plain dicts of physical values (:data:`SETTING_KEYS`).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import signal

STAGE_LUFS = -20.0

# ---------------------------------------------------------------------------
# ITU-R BS.1770-4 loudness, numpy
# ---------------------------------------------------------------------------


def k_weighting(sample_rate: float) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The two K-weighting biquads ((b, a) of the shelf, (b, a) of the high-pass) at any rate.

    Bilinear designs from the analogue parameters that reproduce the 48 kHz coefficients
    BS.1770-4 publishes (shelf: 1681.97 Hz, +4.0 dB, Q 0.7072; high-pass: 38.14 Hz, Q 0.5003),
    after B. De Man's derivation (AES e-Brief 2014 / pyloudnorm's notes).
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = (np.array([(vh + vb * k / q + k * k), 2 * (k * k - vh), (vh - vb * k / q + k * k)]) / a0,
             np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]))
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    high_pass = (np.array([1.0, -2.0, 1.0]), np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]))
    return shelf, high_pass


def lufs(x: np.ndarray, sample_rate: float) -> float:
    """Integrated loudness of (channels, n) or (n,) audio: K-weighting, 400 ms blocks at 75 % overlap, -70 / -10 LU gates."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    (b1, a1), (b2, a2) = k_weighting(sample_rate)
    y = signal.lfilter(b2, a2, signal.lfilter(b1, a1, x, axis=-1), axis=-1)
    block, hop = int(round(0.4 * sample_rate)), int(round(0.1 * sample_rate))
    if y.shape[-1] < block:
        z = (y ** 2).mean(axis=-1).sum()[None]
    else:
        c = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y ** 2, axis=-1)], axis=-1)
        starts = np.arange(0, y.shape[-1] - block + 1, hop)
        z = ((c[:, starts + block] - c[:, starts]) / block).sum(axis=0)  # channel weights 1 (L, R, C)
    level = -0.691 + 10 * np.log10(np.maximum(z, 1e-30))
    z = z[level > -70]
    if z.size == 0:
        return -70.0
    rel = -0.691 + 10 * math.log10(z.mean()) - 10
    z = z[-0.691 + 10 * np.log10(z) > rel]
    return float(-0.691 + 10 * math.log10(z.mean()))


# ---------------------------------------------------------------------------
# analysis and rules
# ---------------------------------------------------------------------------

def analyse(x: np.ndarray, sample_rate: float) -> dict[str, float]:
    """What this engineer listens for, measured on the take staged to -20 LUFS (mono mean of channels)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    stage_db = STAGE_LUFS - lufs(x, sample_rate)
    mono = x.mean(axis=0) * 10 ** (stage_db / 20)
    f, p = signal.welch(mono, sample_rate, nperseg=4096)
    keep = f >= 30
    f, p = f[keep], p[keep]
    total = p.sum() + 1e-30

    def share_db(lo, hi):
        m = (f >= lo) & (f < hi)
        return 10 * math.log10(p[m].sum() / total + 1e-12)

    cum = np.cumsum(p) / total
    win = int(0.01 * sample_rate)
    frames = mono[: mono.size // win * win].reshape(-1, win)
    rms_db = 10 * np.log10((frames ** 2).mean(axis=1) + 1e-12)
    active = rms_db[rms_db > rms_db.max() - 45]
    peak_db = 20 * np.log10(np.abs(frames).max(axis=1) + 1e-9)[rms_db > rms_db.max() - 45]
    return {
        "stage_db": stage_db,
        "low_edge_hz": float(f[np.searchsorted(cum, 0.02)]),  # 2 % of the energy lies below
        "centroid_hz": float((f * p).sum() / total),
        "low_mid_db": share_db(250, 600),
        "presence_db": share_db(2000, 5000),
        "air_db": share_db(8000, sample_rate / 2),
        "loud_db": float(np.percentile(active, 90)),  # 10 ms RMS of the loud parts, staged
        "spread_db": float(np.percentile(active, 90) - np.percentile(active, 20)),
        "crest_db": float(np.percentile(peak_db, 95) - np.percentile(active, 50)),
    }


def _clip(v, lo, hi):
    return float(min(max(v, lo), hi))


SETTING_KEYS = ("hp_hz", "threshold_db", "ratio", "attack_ms", "release_ms", "low_mid_hz", "low_mid_db",
                "presence_hz", "presence_db", "air_hz", "air_db", "drive_db", "bias", "mix", "target_lufs")


def rules(d: dict[str, float]) -> dict[str, float]:
    """"Forward, airy pop vocal": this engineer's settings for one take (nominal units as pedalboard reads them).

    Reference points are the medians of the benchmark's voices (so the rules move both ways):

    * high-pass (6 dB/oct) at 0.8 x the frequency under which 2 % of the energy lies, 60-200 Hz;
    * compressor (JUCE's): threshold 7 dB under the loud parts' 10 ms RMS, ratio 3:1 plus 0.06 per dB
      of level spread over 12 dB (2.5-5:1), nominal attack 4 ms, release 60 ms plus 2 ms per dB of spread (40-140 ms);
    * a low-mid bell (380 Hz, Q 1.4) cutting 0.8 dB per dB of 250-600 Hz share over -6.5 dB, up to -5 dB;
    * a presence bell (3.2 kHz, Q 0.9): +3 dB, 0.35 dB less per dB of 2-5 kHz share over -15.5 dB (-2..+6 dB);
    * an air shelf (11 kHz): +2 dB, 0.2 dB more per dB of > 8 kHz share under -37 dB (0..+6 dB);
    * arctan saturation: drive 4 dB plus 0.5 dB per dB of crest over 13 dB (2-9 dB), bias 0.2, mix 0.5;
    * delivery at -15 LUFS, 1 LU louder per octave of spectral centroid above 500 Hz (-17..-13).
    """
    return {
        "hp_hz": _clip(0.8 * d["low_edge_hz"], 60, 200),
        "threshold_db": d["loud_db"] - 7.0,
        "ratio": _clip(3.0 + 0.06 * (d["spread_db"] - 12), 2.5, 5.0),
        "attack_ms": 4.0,
        "release_ms": _clip(60 + 2 * (d["spread_db"] - 12), 40, 140),
        "low_mid_hz": 380.0, "low_mid_db": -_clip(0.8 * (d["low_mid_db"] + 6.5), 0, 5),
        "presence_hz": 3200.0, "presence_db": _clip(3 - 0.35 * (d["presence_db"] + 15.5), -2, 6),
        "air_hz": 11000.0, "air_db": _clip(2 + 0.2 * (-37 - d["air_db"]), 0, 6),
        "drive_db": _clip(4 + 0.5 * (d["crest_db"] - 13), 2, 9), "bias": 0.2, "mix": 0.5,
        "target_lufs": _clip(-15 + math.log2(max(d["centroid_hz"], 1.0) / 500), -17, -13),
    }


# ---------------------------------------------------------------------------
# the chain
# ---------------------------------------------------------------------------

def arctan_saturation(x: np.ndarray, drive_db: float, bias: float, mix: float) -> np.ndarray:
    """``atan(g x + b) - atan(b)``, scaled back to the dry RMS, blended with the dry signal (no oversampling)."""
    g = 10 ** (drive_db / 20)
    wet = np.arctan(g * x + bias) - math.atan(bias)
    wet -= wet.mean(axis=-1, keepdims=True)
    wet *= math.sqrt((x ** 2).mean() + 1e-20) / math.sqrt((wet ** 2).mean() + 1e-20)
    return (1 - mix) * x + mix * wet


def classic_compressor(x: np.ndarray, sample_rate: float, threshold_db, ratio, attack_ms, release_ms,
                       rms_ms: float = 10.0) -> np.ndarray:
    """An RMS feedback compressor with an opto-style program-dependent release (mono or linked; numba loop).

    The detector reads the compressor's *output*: the one-pole mean square (``rms_ms``) of
    ``y = x g``.  A feedback loop with a gain of ``-(R - 1)`` dB per dB over the threshold
    has the static ratio R.  The gain in dB moves toward that target with ``attack_ms`` and
    ``release_ms`` time constants, but the release slows (up to 4x) the longer and deeper
    the compression has been, as an optical cell's memory does: a slow (1 s) average of the
    gain reduction, in 10 dB units, scales the release time by 1 + 3 x that memory.
    """
    from numba import njit

    global _classic_kernel
    if _classic_kernel is None:
        @njit(cache=False)
        def kernel(x, fs, thr, ratio, att, rel, rms_ms):
            ca = 1 - math.exp(-1000.0 / (att * fs))
            cm = 1 - math.exp(-1000.0 / (rms_ms * fs))
            cmem = 1 - math.exp(-1.0 / fs)
            ms, g, mem = 1e-12, 0.0, 0.0
            out = np.empty_like(x)
            for t in range(x.shape[-1]):
                peak = 0.0
                for c in range(x.shape[0]):
                    v = abs(x[c, t])
                    peak = v if v > peak else peak
                y = peak * 10 ** (g / 20)
                ms += cm * (y * y - ms)
                over = 10 * math.log10(ms + 1e-20) - thr
                target = -(ratio - 1) * over if over > 0 else 0.0
                if target < g:
                    g += ca * (target - g)
                else:
                    cr = 1 - math.exp(-1000.0 / (rel * (1 + 3 * min(1.0, mem)) * fs))
                    g += cr * (target - g)
                mem += cmem * (-g / 10 - mem)
                for c in range(x.shape[0]):
                    out[c, t] = x[c, t] * 10 ** (g / 20)
            return out
        _classic_kernel = kernel
    return _classic_kernel(np.ascontiguousarray(np.atleast_2d(x), dtype=np.float64), float(sample_rate), float(threshold_db),
                           float(ratio), float(attack_ms), float(release_ms), float(rms_ms))


_classic_kernel = None


def render(x: np.ndarray, sample_rate: float, s: dict[str, float], stage_db: float, *, compressor: str = "juce",
           eq_first: bool = False, hp_order: int = 1, compress=None, saturate=None) -> np.ndarray:
    """The foreign chain on (channels, n) audio with settings ``s``; returns float64 (channels, n) at ``s['target_lufs']``.

    ``compressor``: "juce" (pedalboard.Compressor) or "classic".  The keyword options swap
    one piece for another, for the swap analysis: ``eq_first`` puts the bells and shelf
    before the compressor; ``hp_order`` 2 makes the high-pass 12 dB/oct (pedalboard's
    ``HighpassFilter`` is first order; 2 uses scipy's Butterworth); ``compress(x, s)`` and
    ``saturate(x, s)`` replace the compressor and the saturation.
    """
    import pedalboard as pb

    x = np.atleast_2d(np.asarray(x, dtype=np.float64)) * 10 ** (stage_db / 20)
    if hp_order == 1:
        y = pb.HighpassFilter(cutoff_frequency_hz=s["hp_hz"])(x.astype(np.float32), sample_rate).astype(np.float64)
    else:
        y = signal.sosfilt(signal.butter(hp_order, s["hp_hz"], "highpass", fs=sample_rate, output="sos"), x, axis=-1)
    eq = pb.Pedalboard([
        pb.PeakFilter(cutoff_frequency_hz=s["low_mid_hz"], gain_db=s["low_mid_db"], q=1.4),
        pb.PeakFilter(cutoff_frequency_hz=s["presence_hz"], gain_db=s["presence_db"], q=0.9),
        pb.HighShelfFilter(cutoff_frequency_hz=s["air_hz"], gain_db=s["air_db"], q=0.7071),
    ])

    def apply_eq(v):
        return eq(v.astype(np.float32), sample_rate).astype(np.float64)

    def apply_compressor(v):
        if compress is not None:
            return compress(v, s)
        if compressor == "classic":
            return classic_compressor(v, sample_rate, s["threshold_db"], s["ratio"], s["attack_ms"], s["release_ms"])
        c = pb.Compressor(threshold_db=s["threshold_db"], ratio=s["ratio"], attack_ms=s["attack_ms"], release_ms=s["release_ms"])
        return c(v.astype(np.float32), sample_rate).astype(np.float64)

    y = apply_compressor(apply_eq(y)) if eq_first else apply_eq(apply_compressor(y))
    y = saturate(y, s) if saturate is not None else arctan_saturation(y, s["drive_db"], s["bias"], s["mix"])
    return y * 10 ** ((s["target_lufs"] - lufs(y, sample_rate)) / 20)


def mix(x: np.ndarray, sample_rate: float, compressor: str = "juce") -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """Analyse a raw take, choose the settings, render: (mix (channels, n) float64, settings, analysis)."""
    d = analyse(x, sample_rate)
    s = rules(d)
    return render(x, sample_rate, s, d["stage_db"], compressor=compressor), s, d


# ---------------------------------------------------------------------------
# micro-dynamics metric (MLDR-style)
# ---------------------------------------------------------------------------

def micro_dynamics_error_db(pred: np.ndarray, target: np.ndarray, sample_rate: float) -> float:
    """Mean |short-term minus long-term level| difference in dB, over 10/50/200 ms windows against 8x longer ones.

    After the multi-resolution loudness-dynamic-range idea of DiffVox (Steinmetz et al.,
    DAFx 2025): how far each moment sits above or below its surroundings, which a
    compressor's ratio and ballistics set and an overall gain does not.  Frames where the
    target is more than 50 dB under its loudest are left out.
    """
    def env(v, win):
        p = np.atleast_2d(v).astype(np.float64) ** 2
        p = p.mean(axis=0)
        n = p.size // win * win
        return 10 * np.log10(p[:n].reshape(-1, win).mean(axis=1) + 1e-10)

    errs = []
    for ms in (10, 50, 200):
        w = max(1, int(ms * sample_rate / 1000))
        sp, st = env(pred, w), env(target, w)
        lp, lt = env(pred, 8 * w), env(target, 8 * w)
        n = min(sp.size, st.size, 8 * lp.size, 8 * lt.size)
        if n == 0:
            continue
        rp, rt = sp[:n] - np.repeat(lp, 8)[:n], st[:n] - np.repeat(lt, 8)[:n]
        active = st[:n] > st[:n].max() - 50
        errs.append(float(np.abs(rp - rt)[active].mean()))
    return float(np.mean(errs)) if errs else float("nan")
