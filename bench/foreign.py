"""A foreign engineer: an independent vocal chain and rules of its own, for the quality benchmark only.

Nothing here uses dmst's DSP.  The chain is built from pedalboard's effects (JUCE's
filters and compressor; pedalboard is GPL-3.0, so this stays a bench-only dependency),
numpy and scipy:

    staging to -20 LUFS -> 6 dB/oct high-pass -> compressor -> low-mid bell, presence
    bell, air shelf -> arctan saturation (numpy) -> split-band de-esser (numpy/scipy)
    -> dry (centred) + stereo delay send + reverb send (pedalboard) -> delivery loudness
    (numpy BS.1770, on the delivered stereo file)

The space (de-esser, delay, reverb) is issue 12's engineer; without it (``space=False``,
settings without the :data:`SPACE_KEYS`) the chain is issue 11's, sample for sample, so
that table stays reproducible.  With the space the mix is stereo and runs past the raw's
end by its tail (:data:`TAIL_S` at most, trimmed where the tail has died away).

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
    # syllable rate: the strongest 2-9 Hz modulation of the 10 ms amplitude envelope
    envelope = np.sqrt((frames ** 2).mean(axis=1))
    spec = np.abs(np.fft.rfft((envelope - envelope.mean()) * np.hanning(envelope.size), n=max(1024, envelope.size)))
    mod_f = np.fft.rfftfreq(max(1024, envelope.size), 0.01)
    band = (mod_f >= 2) & (mod_f <= 9)
    # where the esses sit: the loudest third-octave-smoothed 4.5-9 kHz bin
    sib = (f >= 4500) & (f < 9000)
    smooth = np.convolve(p, np.ones(9) / 9, mode="same")
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
        "ess_db": share_db(5000, 10000),
        "ess_hz": float(f[sib][np.argmax(smooth[sib])]) if sib.any() else 6500.0,
        "syllable_hz": float(mod_f[band][np.argmax(spec[band])]) if band.any() else 4.0,
        "density": float(np.mean(rms_db > np.percentile(rms_db, 95) - 30)),  # share of 10 ms frames within 30 dB of loud
        "ess_peak_db": float(np.percentile(deesser_sidechain_db(mono[None], sample_rate, _clip(
            float(f[sib][np.argmax(smooth[sib])]) if sib.any() else 6500.0, 5000, 8000)), 99.5)),
    }


def _clip(v, lo, hi):
    return float(min(max(v, lo), hi))


SETTING_KEYS = ("hp_hz", "threshold_db", "ratio", "attack_ms", "release_ms", "low_mid_hz", "low_mid_db",
                "presence_hz", "presence_db", "air_hz", "air_db", "drive_db", "bias", "mix", "target_lufs")


SPACE_KEYS = ("deess_hz", "deess_threshold_db", "deess_range_db", "delay_ms", "delay_feedback", "delay_send_db",
              "reverb_room", "reverb_damping", "reverb_pre_ms", "reverb_send_db")
# reference points of the space rules: medians of the benchmark's fillets-ng-data-cs voices (rounded)
REF_ESS_DB = -27.5  # 5-10 kHz share, dB
REF_SYLLABLE_HZ = 2.5  # the envelope's strongest 2-9 Hz modulation
REF_DENSITY = 0.93  # share of 10 ms frames within 30 dB of the loud ones


def rules(d: dict[str, float], space: bool = False) -> dict[str, float]:
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

    With ``space`` (issue 12's engineer), also:

    * a split-band de-esser centred where the take's esses are loudest (4.5-9 kHz peak, 5-8 kHz), range
      3 dB plus 1.5 dB per dB of 5-10 kHz share over the reference, 0-10 dB (none from 2 dB under it); the
      threshold puts the loudest esses (the sidechain's 99.5th percentile) that range down at 4:1;
    * a stereo delay timed to the take: one syllable (1 / syllable rate, 180-480 ms), the right echo 23 ms
      later; feedback 0.3, 0.06 less per 0.1 of density over the reference (0.15-0.45); send -22 dB, 2 dB
      quieter per 0.1 of density over the reference (-30..-16 dB);
    * a reverb (pedalboard's Freeverb, width 1) whose room grows as the delivery slows (room size 0.55 at the
      reference syllable rate, 0.15 more per syllable/s slower, 0.3-0.8), damping 0.5, 20 ms pre-delay, send
      -16 dB, 2 dB quieter per 0.1 of density over the reference (-24..-10 dB): dense speech keeps its words clear.
    """
    out = {
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
    if space:
        excess = d["ess_db"] - REF_ESS_DB
        deess_range = 0.0 if excess < -2 else _clip(3 + 1.5 * excess, 0, 10)
        dense = d["density"] - REF_DENSITY
        out.update({
            "deess_hz": _clip(d["ess_hz"], 5000, 8000),
            "deess_threshold_db": d["ess_peak_db"] - deess_range / (1 - 1 / DEESS_RATIO),
            "deess_range_db": deess_range,
            "delay_ms": _clip(1000 / max(d["syllable_hz"], 1.0), 180, 480),
            "delay_feedback": _clip(0.3 - 0.6 * dense, 0.15, 0.45),
            "delay_send_db": _clip(-22 - 20 * dense, -30, -16),
            "reverb_room": _clip(0.55 + 0.15 * (REF_SYLLABLE_HZ - d["syllable_hz"]), 0.3, 0.8),
            "reverb_damping": 0.5,
            "reverb_pre_ms": 20.0,
            "reverb_send_db": _clip(-16 - 20 * dense, -24, -10),
        })
    return out


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


DEESS_RATIO = 4.0
TAIL_S = 3.0


def deesser_sidechain_db(x: np.ndarray, sample_rate: float, freq_hz: float) -> np.ndarray:
    """The de-esser's detector: level (dB) of a 2nd-order Butterworth band-pass one octave wide at ``freq_hz``,
    peak over a 5 ms look-ahead window (a centred 10 ms maximum), smoothed by a 15 ms one-pole: (n,)."""
    lo, hi = freq_hz / math.sqrt(2), min(freq_hz * math.sqrt(2), 0.45 * sample_rate)
    band = signal.sosfilt(signal.butter(2, [lo, hi], "bandpass", fs=sample_rate, output="sos"),
                          np.atleast_2d(x).mean(axis=0))
    from scipy.ndimage import maximum_filter1d

    peak = maximum_filter1d(np.abs(band), size=max(1, int(0.01 * sample_rate)))
    a = math.exp(-1 / (0.015 * sample_rate))
    smooth = signal.lfilter([1 - a], [1, -a], peak)
    return 20 * np.log10(np.maximum(smooth, 1e-9))


def split_band_deesser(x: np.ndarray, sample_rate: float, freq_hz: float, threshold_db: float, range_db: float,
                       ratio: float = DEESS_RATIO) -> np.ndarray:
    """A split-band de-esser (numpy/scipy), linked over the channels.

    The sidechain (:func:`deesser_sidechain_db`) drives ``(L - T)(1 - 1/ratio)`` dB of gain reduction, at most
    ``range_db``, on the band above half an octave under ``freq_hz`` only (a 4th-order Butterworth high-pass run
    forward and backward, zero phase; the rest is the signal minus that band, so with no reduction the output is
    the input exactly).  Not dmst's design: a look-ahead peak detector, a hard knee, a zero-phase band split by
    subtraction.
    """
    x = np.atleast_2d(x)
    if range_db <= 0:
        return x
    over = deesser_sidechain_db(x, sample_rate, freq_hz) - threshold_db
    reduction_db = np.clip(over * (1 - 1 / ratio), 0, range_db)
    # zero phase (offline), so the band subtracted is in phase with the signal and the split adds back exactly
    high = signal.sosfiltfilt(signal.butter(4, freq_hz / math.sqrt(2), "highpass", fs=sample_rate, output="sos"), x, axis=-1)
    return x + (10 ** (-reduction_db / 20) - 1) * high


def space_returns(send: np.ndarray, sample_rate: float, s: dict[str, float], reverb_ir: np.ndarray | None = None) -> np.ndarray:
    """(2, n) stereo returns of a mono (n,) send: pedalboard's Delay (left at ``delay_ms``, right 23 ms later,
    the send band-limited to 250 Hz-5 kHz first) and Freeverb (``reverb_room``, ``reverb_damping``, width 1,
    after ``reverb_pre_ms``), each at its send level.  ``reverb_ir`` (2, m): Freeverb replaced by this impulse
    response, convolved (bench/space_swap.py's swap)."""
    import pedalboard as pb

    v = send.astype(np.float32)[None]
    band = pb.Pedalboard([pb.HighpassFilter(250.0), pb.LowpassFilter(5000.0)])(v, sample_rate)
    fb = s["delay_feedback"]
    left = pb.Delay(delay_seconds=s["delay_ms"] / 1000, feedback=fb, mix=1.0)(band, sample_rate)[0]
    right = pb.Delay(delay_seconds=s["delay_ms"] / 1000 + 0.023, feedback=fb, mix=1.0)(band, sample_rate)[0]
    pre = int(round(s["reverb_pre_ms"] * sample_rate / 1000))
    rv_in = np.concatenate([np.zeros((2, pre), np.float32), np.repeat(v, 2, axis=0)[:, : v.shape[-1] - pre]], axis=-1)
    if reverb_ir is None:
        rev = pb.Reverb(room_size=s["reverb_room"], damping=s["reverb_damping"], wet_level=1.0, dry_level=0.0,
                        width=1.0)(rv_in, sample_rate)
    else:
        rev = np.stack([signal.fftconvolve(rv_in[0].astype(np.float64), ir)[: v.shape[-1]] for ir in reverb_ir])
    d_gain, r_gain = 10 ** (s["delay_send_db"] / 20), 10 ** (s["reverb_send_db"] / 20)
    return (d_gain * np.stack([left, right]) + r_gain * rev).astype(np.float64)


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
           eq_first: bool = False, hp_order: int = 1, compress=None, saturate=None, reverb_ir=None) -> np.ndarray:
    """The foreign chain on (channels, n) audio with settings ``s``; returns float64 (channels, n) at ``s['target_lufs']``.

    ``compressor``: "juce" (pedalboard.Compressor) or "classic".  The keyword options swap
    one piece for another, for the swap analysis: ``eq_first`` puts the bells and shelf
    before the compressor; ``hp_order`` 2 makes the high-pass 12 dB/oct (pedalboard's
    ``HighpassFilter`` is first order; 2 uses scipy's Butterworth); ``compress(x, s)`` and
    ``saturate(x, s)`` replace the compressor and the saturation.  ``reverb_ir`` replaces Freeverb's
    return with that impulse response (:func:`space_returns`).
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
    if "reverb_send_db" in s:  # issue 12's engineer: de-esser, then the dry signal centred plus stereo returns
        n_raw = y.shape[-1]
        y = np.pad(y, ((0, 0), (0, int(TAIL_S * sample_rate))))  # room for the tail (trimmed where it has died away)
        y = split_band_deesser(y, sample_rate, s["deess_hz"], s["deess_threshold_db"], s["deess_range_db"])
        returns = space_returns(y.mean(axis=0), sample_rate, s, reverb_ir)
        y = (y if y.shape[0] == 2 else np.repeat(y[:1], 2, axis=0)) + returns
        y = y[:, : _tail_end(y, sample_rate, n_raw)]
    return y * 10 ** ((s["target_lufs"] - lufs(y, sample_rate)) / 20)


def _tail_end(y: np.ndarray, sample_rate: float, n_raw: int) -> int:
    """Where the mix ends: the last 10 ms after the raw's end whose power is within 70 dB of the loudest 10 ms."""
    win = int(0.01 * sample_rate)
    p = (y[:, : y.shape[-1] // win * win] ** 2).sum(axis=0).reshape(-1, win).mean(axis=1)
    alive = np.nonzero(p > p.max() * 1e-7)[0]
    end = (alive[-1] + 1) * win if alive.size else y.shape[-1]
    return int(min(y.shape[-1], max(n_raw, end)))


def mix(x: np.ndarray, sample_rate: float, compressor: str = "juce",
        space: bool = False) -> tuple[np.ndarray, dict[str, float], dict[str, float]]:
    """Analyse a raw take, choose the settings, render: (mix (channels, n) float64, settings, analysis).

    ``space``: issue 12's engineer (de-esser, delay, reverb; a stereo mix with a tail); without it issue 11's."""
    d = analyse(x, sample_rate)
    s = rules(d, space=space)
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
