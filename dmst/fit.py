"""``dmst fit``: the console settings that best reproduce one mix from its raw vocal.

No network: the console's parameters are optimised directly (Adam on the sigmoid logits of
their normalised values) against the training loss plus a band-envelope term (what keeps a
fitted space honest, :class:`dmst.losses.BandEnvelopeLoss`), in the mix's channel layout
(recorded as ``meta.output_channels``, so ``dmst render --params`` renders in it too).

Where it starts matters as much as the descent (:func:`fitting_start`): at the defaults the
sends, the de-esser and the gate are off and have no gradient, so a fit starts from
:data:`dmst.schema.TRAINING_START`, and what can be measured on the mix is measured instead
of searched for: its loudness, its true peak (the limiter's ceiling) and, by deconvolution,
the time of its echo (the loss is far from convex in a delay time).  A third of the way in,
the reverb's length is chosen from a coarse grid (:func:`_search_decay`).  A song is fitted on
short excerpts, one per step, and its output loudness is then solved on the whole song.  At the
end, the sends, the de-esser and the gate (started on) are switched off exactly where they lower the loss by
less than 0.5 % (:func:`dmst.switches.switch_off`, as ``dmst train`` does): a dry mix comes back dry.

It answers "what did I do on that song?", and it is the per-song ceiling a trained model is
measured against.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

import torch

from . import schema
from .console import render
from .data import Pair, check_pairs, excerpt_loudness_offset_lu, to_layout
from .effects._sends import fast_length
from .effects.gain import integrated_loudness, staging_gain_db
from .encoder.model import clamp_to_ranges
from .losses import MixLoss
from .switches import pin_defaults, switch_off

WHOLE_SECONDS = 20.0  # a pair up to this long is fitted whole, every step
# A longer song is fitted on short excerpts, one per step (a step costs the same for any song length).
EXCERPT_SECONDS = 1.5
EXCERPTS_PER_STEP = 1
EXCERPT_POOL = 24  # evenly spaced over the song's active part
DEFAULT_STEPS = 120
LR = 0.1
FIT_THREADS = 1  # see _threads
ENVELOPE_WEIGHT = 1.0  # the band-envelope term (dmst.losses.BandEnvelopeLoss): what keeps a fitted space honest
# The echo search (echo_time_ms): a peak of the deconvolved response this many times its mean over the 20 ms
# around it is an echo (the largest of a noise-like tail's 40000 samples at 44.1 kHz stands about 5x above).
ECHO_PEAK_RATIO = 10.0
ECHO_BACKGROUND_MS = 20.0
ECHO_SEARCH_SECONDS = 60.0
ECHO_OWN_EXCLUDE_MS = 5.0  # how near a peak of the raw's response to itself a lag is left out (the dry chain smears it)
# The reverb-length search (_search_decay): RT60s spaced 1.5x over decay_s's range, scored on a few excerpts.
DECAY_GRID = (0.25, 0.4, 0.6, 0.9, 1.35, 2.0, 3.0, 4.5)
DECAY_SEARCH_EXCERPTS = 4


def excerpt_pool(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, seconds: float = EXCERPT_SECONDS,
                 count: int = EXCERPT_POOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``count`` aligned (count, channels, n) excerpts of ``seconds``, evenly spaced over the song, where
    both the raw and the mix are within 30 dB of their loudest excerpt (pauses and tails teach nothing here)."""
    seg = int(seconds * sample_rate)
    n = raw.shape[-1]
    grid = torch.arange(0, n - seg + 1, seg // 2)
    keep = torch.ones(len(grid), dtype=torch.bool)
    for x in (raw, mixed):
        # mean square of every window from one running sum (one pass, not one reduction per window)
        energy = torch.nn.functional.pad(x[:, :n].double().pow(2).sum(0).cumsum(0), (1, 0))
        level = 10 * torch.log10((energy[grid + seg] - energy[grid]) / (seg * x.shape[0]) + 1e-20)
        keep &= level > level.max() - 30
    active = grid[keep]
    starts = active[torch.linspace(0, len(active) - 1, min(count, len(active))).round().long()].tolist()
    return torch.stack([raw[:, s:s + seg] for s in starts]), torch.stack([mixed[:, s:s + seg] for s in starts])


def echo_time_ms(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, lo_ms: float | None = None,
                 hi_ms: float | None = None, max_seconds: float = ECHO_SEARCH_SECONDS) -> float | None:
    """The time of the strongest echo of ``raw`` in ``mixed`` (both (channels, n), aligned), in ms, or None.

    A coarse search before gradient descent: the loss is far from convex in ``delay.time_ms``
    (every echo time between two of the mix's is a different comb), so descent only refines a
    time that is already close.  The mix's impulse response from the raw is estimated by
    regularised (Wiener) deconvolution of their mono sums, ``h = irfft(Y X* / (|X|^2 + eps))``;
    the dry chain puts its peak near 0 ms, a delay send one at its time (then at 2x, 3x, ... each
    weaker), a reverb only a diffuse, noise-like tail.  Returns the lag of the largest peak of
    ``|h|`` within the delay's range that stands out of its surroundings, or None when none does:
    a mix without a delay.  At most ``max_seconds`` of the song are used (any stretch with the
    voice in it will do).
    """
    span = schema.BY_KEY["delay.time_ms"]
    lo_ms = span.minimum if lo_ms is None else lo_ms
    hi_ms = span.maximum if hi_ms is None else hi_ms
    n = min(raw.shape[-1], mixed.shape[-1], int(max_seconds * sample_rate))
    x = raw[:, :n].double().mean(0)
    y = mixed[:, :n].double().mean(0)
    lo, hi = int(lo_ms * sample_rate / 1000), int(hi_ms * sample_rate / 1000) + 1
    half = int(ECHO_BACKGROUND_MS / 2 * sample_rate / 1000)
    if n <= hi + half or not bool(x.abs().max() > 0):
        return None
    n_fft = fast_length(n + hi + half)
    spec_x, spec_y = torch.fft.rfft(x, n_fft), torch.fft.rfft(y, n_fft)
    power = spec_x.abs().pow(2)
    regularised = power + 1e-3 * power.mean()
    h = torch.fft.irfft(spec_y * spec_x.conj() / regularised, n_fft)[: hi + half + 1].abs()
    # An echo is a sharp peak; the regularisation and the dry chain leave a smooth ringing after 0 ms, a reverb
    # a noise-like tail.  So a peak counts where it stands ECHO_PEAK_RATIO x above h's mean over the
    # ECHO_BACKGROUND_MS around it, and the tallest such peak in the delay's range is the echo.
    window = h[lo:hi + 1]
    standing = _standing_peaks(h, lo, hi, half)
    # A take's own structure makes peaks too: a recording deconvolved with itself showed one at exactly 50 and
    # 100 ms, taller than a -18 dB echo at 330 ms.  They are in the raw's response to itself, P / (P + eps), as
    # in every mix of it: a lag near one of its standing peaks is not an echo.
    own = torch.fft.irfft(power / regularised, n_fft)[: hi + half + 1].abs()
    near = int(ECHO_OWN_EXCLUDE_MS * sample_rate / 1000)
    own_peaks = _standing_peaks(own, lo, hi, half).double()[None, None]
    standing &= torch.nn.functional.max_pool1d(own_peaks, 2 * near + 1, stride=1, padding=near)[0, 0] == 0
    if not bool(standing.any()):
        return None
    peak = int(torch.where(standing, window, torch.zeros_like(window)).argmax())
    return 1000.0 * (lo + peak) / sample_rate


def _standing_peaks(h: torch.Tensor, lo: int, hi: int, half: int) -> torch.Tensor:
    """(hi - lo + 1,) bool: the lags ``lo..hi`` where ``h`` stands ECHO_PEAK_RATIO x above its mean over the
    ECHO_BACKGROUND_MS around them."""
    run = torch.nn.functional.pad(h.cumsum(0), (1, 0))
    lags = torch.arange(lo, hi + 1)
    left, right = (lags - half).clamp_min(0), lags + half
    background = (run[right + 1] - run[left]) / (right + 1 - left)
    return h[lo:hi + 1] > ECHO_PEAK_RATIO * background


def fitting_start(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Where a fit starts, (P,) normalised, and the values it holds there ({key: physical value}, exact: a
    value at the edge of a range is one the sigmoid of the fitted logits only nears).

    The start is :data:`dmst.schema.TRAINING_START` (every effect where it has a gradient: the sends,
    the de-esser and the gate a little on, the detector blends mid-range), and what can be measured on
    the mix instead of searched for: its loudness (the output stage lands on it), its true peak
    (where a limiter's ceiling would be: a ceiling at the mix's peak touches the render's peaks, so it has a
    gradient) and the time of its strongest echo (:func:`echo_time_ms`).  The loudness is held (the output
    stage lands the render on it; the whole-song solve sets it at the end).  An echo time found is held: it is
    exact to the sample, and descent on the comb-like loss only moves it off (measured: 180 ms found, 207 ms
    after 40 steps of descent).  A mix over 0 dBTP was not limited: no ceiling reproduces it, so the limiter
    is held off (fitted from just under 0 dBTP, it stayed on at -0.001 dBTP and shaved the mix's peaks: crest
    error up to 3 dB)."""
    from .audio_io import true_peak_dbfs

    u = schema.training_start_normalized().double()
    held = {}

    def put(key, value, hold=False):
        p = schema.BY_KEY[key]
        value = min(max(value, p.minimum), p.maximum)
        u[schema.KEYS.index(key)] = p.normalize(torch.tensor(value, dtype=torch.float64))
        if hold:
            held[key] = float(value)

    lufs = float(integrated_loudness(mixed[None], sample_rate)[0])
    if math.isfinite(lufs):
        put("output.loudness_lufs", lufs, hold=True)
    peak = true_peak_dbfs(mixed, sample_rate)
    if math.isfinite(peak):
        put("limiter.ceiling_dbtp", peak, hold=peak >= schema.LIMITER_OFF_DBTP)
    echo = echo_time_ms(raw, mixed, sample_rate)
    if echo is not None:
        put("delay.time_ms", echo, hold=True)
    return u.float(), held


@contextlib.contextmanager
def _threads(count: int | None):
    """torch's and numba's thread pools set to ``count`` (None: as they are) for the block, then restored.

    A fit is hundreds of small operations on 1.5 s excerpts: two threads gain little on them, and on a
    machine that is doing anything else their spinning pools cost far more (measured: 2.7x slower at load 3).
    One thread also makes a fit repeat bit for bit on any machine (MKL's FFTs round by thread count).
    """
    if count is None:
        yield
        return
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(count)
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


@torch.no_grad()
def _search_decay(logits: torch.Tensor, loss_of, idx: torch.Tensor, envelope) -> None:
    """Set ``reverb.decay_s`` in ``logits`` (in place) to the best of ``DECAY_GRID`` and its current value, the
    rest held, by the band-envelope loss ``envelope`` on the excerpts ``idx``.

    Descent moves the decay slowly and can settle on the wrong side of a delay whose echoes decay too: a few
    renders without gradients (cheap) look at the whole range at once.  Scored on band envelopes alone, which
    do not depend on which noise a reverb is made of (the fine-structure terms favour a shorter, quieter tail
    whenever the samples do not line up).
    """
    key = schema.KEYS.index("reverb.decay_s")
    p = schema.BY_KEY["reverb.decay_s"]
    candidates = [float(logits[0, key])] + [
        float(torch.logit(p.normalize(torch.tensor(d, dtype=torch.float64)).clamp(1e-3, 1 - 1e-3))) for d in DECAY_GRID]
    scores = []
    for c in candidates:
        trial = logits.detach().clone()
        trial[0, key] = c
        scores.append(float(loss_of(trial, idx, envelope)))
    logits[0, key] = candidates[min(range(len(scores)), key=scores.__getitem__)]


def fit_params(raw: torch.Tensor, mixed: torch.Tensor, sample_rate: int, steps: int = DEFAULT_STEPS, lr: float = LR,
               progress: bool = False, init: dict | None = None, staging_db: float | None = None,
               threads: int | None = FIT_THREADS, high_pass_slope_db: float | None = None) -> tuple[dict, float]:
    """Optimise one setting so that console(raw) matches ``mixed``; both (channels, n), aligned.

    Starts from :func:`fitting_start` (or ``init``).  The render is in the mix's layout (a mono
    raw against a stereo mix is rendered as centred stereo), and loudness is that of the
    delivered file (BS.1770 sums the channels).  A pair up to ``WHOLE_SECONDS`` long is fitted
    whole; a longer song on ``EXCERPTS_PER_STEP`` short excerpts per step, drawn in turn from a
    pool spread over the song, so a step costs the same for any song length.  Adam on the
    sigmoid logits of the normalised values, the learning rate falling from ``lr`` to a tenth
    (cosine).  The output loudness is then solved on the whole song: the output stage lands a
    render exactly on ``loudness_lufs``, so the best value is the mix's own loudness.

    ``staging_db``: the console's input gain if already measured on the whole raw file.
    ``threads``: torch and numba threads during the fit (see :func:`_threads`; None: leave them).
    ``high_pass_slope_db``: the EQ's high-pass slope, held (a discrete row is chosen, not fitted); None: the
    start's (``init``'s, else 12 dB/octave).
    Returns (nested params, final loss on the excerpts).  Deterministic for a given input.
    """
    raw = torch.as_tensor(raw, dtype=torch.float32)
    mixed = torch.as_tensor(mixed, dtype=torch.float32)
    with _threads(threads):
        return _fit(raw, mixed, sample_rate, steps, lr, progress, init, staging_db, high_pass_slope_db)


def _fit(raw, mixed, sample_rate, steps, lr, progress, init, staging_db, high_pass_slope_db=None):
    channels = mixed.shape[0]
    if staging_db is None:
        staging_db = float(staging_gain_db(raw[None], sample_rate)[0])  # on the raw as delivered, as training does
    frozen = torch.zeros(schema.NUM_PARAMS, dtype=torch.bool)
    held = {}
    if init:
        start = schema.normalize(schema.stack([init]))
    else:
        start, held = fitting_start(raw, mixed, sample_rate)
        start = start[None]
        for key in held:
            frozen[schema.KEYS.index(key)] = True
    # A held value at an edge of its range (the limiter off, at 0 dBTP) is one the sigmoid only nears: rendered as
    # it is.  (Inside its range the sigmoid gives it back to float precision.)
    at_edge = {k: v for k, v in held.items() if v in (schema.BY_KEY[k].minimum, schema.BY_KEY[k].maximum)}
    for key in schema.DISCRETE_KEYS:  # chosen, not fitted: no gradient, and never moved
        frozen[schema.KEYS.index(key)] = True
    if high_pass_slope_db is not None:
        slope = schema.BY_KEY["eq.high_pass_slope_db"]
        schema.check_value(slope.key, high_pass_slope_db)
        start[:, schema.KEYS.index(slope.key)] = slope.normalize(float(high_pass_slope_db))
    # A mono raw is rendered once and copied (the console treats channels alike, so the copies are identical).
    raw = raw if raw.shape[0] == 1 else to_layout(raw, channels)
    whole_lufs = float(integrated_loudness(mixed[None], sample_rate)[0])
    n = raw.shape[-1]
    if n <= WHOLE_SECONDS * sample_rate:
        raw_x, mix_x = raw[None], mixed[None]
        per_step = raw_x.shape[0]
    else:
        raw_x, mix_x = excerpt_pool(raw, mixed, sample_rate)
        per_step = min(EXCERPTS_PER_STEP, raw_x.shape[0])
    offset = excerpt_loudness_offset_lu(mix_x, whole_lufs, sample_rate) if raw_x.shape[-1] < n else torch.zeros(raw_x.shape[0])
    staging = torch.full((raw_x.shape[0],), float(staging_db))

    start = start.clamp(1e-3, 1 - 1e-3)
    logits = torch.nn.Parameter(torch.log(start) - torch.log1p(-start))
    opt = torch.optim.Adam([logits], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps), eta_min=0.1 * lr)
    # No loudness term: the output stage puts the render on the mix's loudness already (held, then solved).
    loss_fn = MixLoss(sample_rate, loudness_weight=0.0, envelope_weight=ENVELOPE_WEIGHT)

    # A mono raw for a stereo mix: the dry chain runs once, the console returns stereo (centred dry, stereo sends).
    layout = 2 if raw.shape[0] == 1 and channels == 2 else None

    def loss_of(u_logits, idx, loss=loss_fn, off=()):
        params = schema.denormalize(pin_defaults(torch.sigmoid(u_logits), off).expand(len(idx), -1))
        params.update({key: torch.full_like(params[key], value) for key, value in at_edge.items()})
        y = render(raw_x[idx], sample_rate, params, staging_db=staging[idx], excerpt_offset_lu=offset[idx],
                   output_channels=layout)
        return loss(to_layout(y, channels), mix_x[idx])

    whole_batch = per_step == raw_x.shape[0]
    order = torch.randperm(raw_x.shape[0], generator=torch.Generator().manual_seed(0))
    best = (float("inf"), logits.detach().clone())
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="fitting", unit="step", file=sys.stderr)
    for step in it:
        if step == steps // 3 and not init:  # the rest has settled: the reverb's length, by a coarse search
            _search_decay(logits, loss_of, torch.arange(min(raw_x.shape[0], DECAY_SEARCH_EXCERPTS)), loss_fn.envelope)
        if whole_batch:
            idx = torch.arange(raw_x.shape[0])
        else:  # the pool in a fixed shuffled order, per_step excerpts at a time
            k = step * per_step
            idx = order[torch.arange(k, k + per_step) % raw_x.shape[0]]
        loss = loss_of(logits, idx)
        before = logits.detach().clone()
        opt.zero_grad()
        loss.backward()
        logits.grad[:, frozen] = 0.0  # Adam's moments stay 0 there: those values do not move
        opt.step()
        sched.step()
        value = loss.item()
        if whole_batch and value < best[0]:  # measured before this step's update: keep the logits it was measured at
            best = (value, before)
        if progress:
            it.set_postfix(loss=f"{value:.4f}")
    # Whole: the best setting seen; minibatches (losses not comparable): the final, annealed one.
    final = (best[1] if whole_batch and steps else logits.detach()).clone()
    off = ()
    if not init:  # the sends, the de-esser and the gate started on: each stays on only where it earns its place
        idx = torch.arange(min(raw_x.shape[0], DECAY_SEARCH_EXCERPTS))
        off, _ = switch_off(lambda keys: loss_of(final, idx, off=keys))
    with torch.no_grad():  # scored on the whole pool
        best = (float(loss_of(final, torch.arange(raw_x.shape[0]), off=off)), final)
    # A switched-off effect is exactly its default (off), not the sigmoid's nearest value to it.
    params = schema.unstack(clamp_to_ranges(schema.denormalize(pin_defaults(torch.sigmoid(best[1]).double(), off))))[0]
    for key, value in held.items():  # exactly, not the sigmoid's nearest value (the limiter held off: 0 dBTP)
        p = schema.BY_KEY[key]
        params[p.group][p.name] = value
    if math.isfinite(whole_lufs):  # the whole-song loudness solve
        out = schema.BY_KEY["output.loudness_lufs"]
        params["output"]["loudness_lufs"] = min(max(whole_lufs, out.minimum), out.maximum)
    return params, best[0]


def main(argv=None) -> int:
    from .audio_io import AudioFileError, check_input, write_bytes

    p = argparse.ArgumentParser(prog="dmst fit", description="Find the console settings that reproduce MIXED from RAW (no network).")
    p.add_argument("raw")
    p.add_argument("mixed")
    p.add_argument("-o", "--output", help="write the settings JSON here (default: print to stdout)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimiser steps (default: {DEFAULT_STEPS})")
    p.add_argument("--threads", type=int, default=FIT_THREADS,
                   help=f"CPU threads for the optimisation (default: {FIT_THREADS}; more rarely helps: the steps are small)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--high-pass-slope", type=float, choices=schema.BY_KEY["eq.high_pass_slope_db"].choices, default=12.0,
                   metavar="{6,12,18,24}", help="the EQ's high-pass slope in dB/octave, held (a choice, not fitted) [12]")
    args = p.parse_args(argv)
    if args.steps < 0 or args.threads < 1:
        print("dmst fit: error: --steps must be 0 or more and --threads 1 or more; pass e.g. --steps 120 --threads 1",
              file=sys.stderr)
        return 2
    try:
        sample_rate = check_input(args.raw).sample_rate  # one-line errors for a missing, empty or broken file
        check_input(args.mixed)  # (headers only: each file is decoded once, by check_pairs)
        # The same checks training applies: silence, length, resampling, alignment, polarity, a different song.
        report = check_pairs([Pair(Path(args.raw).stem, Path(args.raw), Path(args.mixed))], sample_rate=sample_rate, progress=False)
        if not report.usable:
            raise AudioFileError(f"cannot fit {args.mixed} to {args.raw}: {report.skipped[0].reason}")
        for warning in report.warnings:
            print(f"dmst fit: warning: {warning}", file=sys.stderr)
        pair = report.usable[0]
        offset_ms = pair.offset_ms
        params, loss = fit_params(pair.raw, pair.mixed, sample_rate, steps=args.steps, progress=True,
                                  staging_db=pair.staging_db, threads=args.threads,
                                  high_pass_slope_db=args.high_pass_slope)
        text = schema.to_json(params, source=str(args.raw), fitted_to=str(args.mixed), loss=round(loss, 5),
                              offset_ms=round(offset_ms, 2), output_channels=pair.mixed_channels)
        if args.output:
            write_bytes(args.output, (text + "\n").encode(), inputs=[args.raw, args.mixed], force=args.force)
            print(f"wrote {args.output} (loss {loss:.4f}, mix offset {offset_ms:.1f} ms)", file=sys.stderr)
        else:
            print(text)
    except (AudioFileError, schema.ParamError, OSError) as e:
        print(f"dmst fit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
