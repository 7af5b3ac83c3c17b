"""The compressor's two smoothing passes as one machine-code loop, for rendering without gradients.

The passes are branching recursions (see :mod:`dmst.effects.compressor`): they cannot
be vectorised, and a Python loop over millions of samples is far too slow.  The loop
is written here as LLVM IR and compiled once per process (:mod:`._llvm`).

State is kept in float64 whatever the input dtype (as torchcomp's Numba kernel does
for float32 input); the operations are the ones torchcomp's ``compressor_core`` runs,
in the same order, and ``tests/test_compressor.py`` checks the two against each other
and against a plain-Python loop.

The other dynamics effects' render paths live here too, each a whole chain of steps in
one pass so that no full-length temporary is written between them: the compressor's
detector families (:func:`family`), the gate's and de-esser's detector with its curve and
ballistics (:func:`detector_gain`) and the limiter's gain path (:func:`lookahead_gain`);
``tests/test_gate.py`` and ``tests/test_limiter.py`` check the last two against numpy loops.
"""
from __future__ import annotations

import ctypes
import functools
import math

import torch

from ._llvm import compile_function, ir_loop


def ir_soft_knee(b, over, slope, width, half):
    """IR of :func:`dmst.effects._dynamics.soft_knee` for one float64 sample, the same operations in the same order.

    ``over``: level minus threshold; ``slope``; ``width``: the knee (> 0); ``half``: ``width / 2``.
    """
    import llvmlite.ir as ir

    zero, two = ir.Constant(ir.DoubleType(), 0.0), ir.Constant(ir.DoubleType(), 2.0)
    bend = b.fadd(over, half)
    in_knee = b.fdiv(b.fmul(slope, b.fmul(bend, bend)), b.fmul(two, width))
    static = b.select(b.fcmp_ordered(">", over, half), b.fmul(slope, over), in_knee)
    return b.select(b.fcmp_ordered("<", over, b.fsub(zero, half)), zero, static)


def ir_branching_step(b, f, held, gain, attack, keep_attack, release, keep_release):
    """IR of one sample of the branching ballistics (:func:`ballistics`): the held reduction ``f`` falls at once
    and rises with ``release``; the gain follows it down with ``attack`` and up at once.  Returns (held, gain)."""
    released = b.fadd(b.fmul(held, keep_release), b.fmul(release, f))
    held = b.select(b.fcmp_ordered("<", f, held), f, released)
    attacked = b.fadd(b.fmul(gain, keep_attack), b.fmul(attack, held))
    return held, b.select(b.fcmp_ordered("<", held, gain), attacked, held)


def _build_ir(io_double: bool) -> str:
    """LLVM IR of ``void ballistics(T* f_in, T* out, i64 batch, i64 n, T* attack, T* release, i64 curve,
    T* threshold, T* ratio, T* knee)``.

    For each item ``b`` and sample ``t``, with ``r = release[b]``, ``a = attack[b]`` and
    ``f`` the target gain in dB (<= 0): ``f_in[b, t]`` itself, or with ``curve`` = 1 the
    soft-knee static curve of the level ``f_in[b, t]`` (dB) as
    :func:`dmst.effects.compressor.gain_computer` computes it::

        held = f if f < held else held * (1 - r) + r * f      # instant attack, exponential release
        gain = gain * (1 - a) + a * held if held < gain else held   # attack-only smoothing
        out[b, t] = gain
    """
    import llvmlite.ir as ir

    io = ir.DoubleType() if io_double else ir.FloatType()
    f64, i64 = ir.DoubleType(), ir.IntType(64)
    ptr = io.as_pointer()
    module = ir.Module(name="dmst_ballistics")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64, i64, ptr, ptr, i64, ptr, ptr, ptr]),
                     name="ballistics")
    f_in, out, batch, n, attack, release, curve, threshold, ratio, knee = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one, two = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0), ir.Constant(f64, 2.0)
    use_curve = b.icmp_signed("!=", curve, ir.Constant(i64, 0))

    def load(pointer, index):
        value = b.load(b.gep(pointer, [index]))
        return value if io_double else b.fpext(value, f64)

    def item(i):
        a, r = load(attack, i), load(release, i)
        keep_a, keep_r = b.fsub(one, a), b.fsub(one, r)
        thr, width = load(threshold, i), load(knee, i)  # the curve's constants (knee > 0)
        slope = b.fsub(b.fdiv(one, load(ratio, i)), one)
        half = b.fdiv(width, two)
        row = b.mul(i, n)

        def sample(t, held, gain):
            index = b.add(row, t)
            f = load(f_in, index)
            f = b.select(use_curve, ir_soft_knee(b, b.fsub(f, thr), slope, width, half), f)
            new_held, new_gain = ir_branching_step(b, f, held, gain, a, keep_a, r, keep_r)
            b.store(new_gain if io_double else b.fptrunc(new_gain, io), b.gep(out, [index]))
            return [new_held, new_gain]

        ir_loop(b, ir.Constant(i64, 0), n, [zero, zero], sample)
        return []

    ir_loop(b, ir.Constant(i64, 0), batch, [], item)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=2)
def _compiled(io_double: bool):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_ir(io_double), "ballistics", [p, p, i64, i64, p, p, i64, p, p, p])


def _per_item(v: torch.Tensor, batch: int, dtype) -> torch.Tensor:
    return v.detach().to("cpu", dtype).reshape(-1).expand(batch).contiguous()


def ballistics(target_db: torch.Tensor, attack: torch.Tensor, release: torch.Tensor, curve=None) -> torch.Tensor:
    """Smoothed gain in dB (batch, samples) from the gain computer's ``target_db`` (batch, samples).

    ``attack`` and ``release`` are (batch,) one-pole coefficients.  With ``curve =
    (threshold_db, ratio, knee_db)`` (each (batch,) or one value), ``target_db`` is the
    detected level in dB instead, and the static curve runs inside the same loop (one
    pass over the signal instead of several).  Runs on the CPU (inputs on another
    device are copied there and the result copied back).
    """
    if target_db.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"ballistics needs float32 or float64 input, got {target_db.dtype}")
    device, dtype = target_db.device, target_db.dtype
    f = target_db.detach().to("cpu").contiguous()
    a = attack.detach().to("cpu", dtype).contiguous()
    r = release.detach().to("cpu", dtype).contiguous()
    batch, n = f.shape
    if a.numel() != batch or r.numel() != batch:
        raise ValueError(f"need one attack and release coefficient per item: {batch} items, got {a.numel()} and {r.numel()}")
    if curve is None:
        shape = [a, a, a]  # not read
    else:
        threshold_db, ratio, knee_db = (_per_item(torch.as_tensor(v), batch, dtype) for v in curve)
        shape = [threshold_db, ratio, knee_db.clamp_min(1e-6)]  # as gain_computer clamps the knee
    out = torch.empty_like(f)
    kernel = _compiled(dtype == torch.float64)
    kernel(f.data_ptr(), out.data_ptr(), batch, n, a.data_ptr(), r.data_ptr(), int(curve is not None),
           *(v.data_ptr() for v in shape))  # ctypes releases the GIL
    return out.to(device)


def _build_one_pole_ir(io_double: bool) -> str:
    """LLVM IR of ``void one_pole(T* x, T* out, i64 batch, i64 n, T* falling, T* rising)``.

    For each item ``b`` and sample ``t``, in float64 state from 0, the branching one-pole
    recursion of torchcomp's ``compressor_core`` (same operations, same order)::

        c = falling[b] if x[b, t] < y else rising[b]
        y = y * (1 - c) + c * x[b, t]
        out[b, t] = y

    With ``falling == rising`` it is a plain one-pole average (the RMS detector's mean
    square); with the level envelope negated, ``falling`` is the attack coefficient.
    """
    import llvmlite.ir as ir

    io = ir.DoubleType() if io_double else ir.FloatType()
    f64, i64 = ir.DoubleType(), ir.IntType(64)
    ptr = io.as_pointer()
    module = ir.Module(name="dmst_one_pole")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64, i64, ptr, ptr]), name="one_pole")
    x_in, out, batch, n, falling, rising = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0)

    def load(pointer, index):
        value = b.load(b.gep(pointer, [index]))
        return value if io_double else b.fpext(value, f64)

    def item(i):
        down, up = load(falling, i), load(rising, i)
        row = b.mul(i, n)

        def sample(t, y):
            index = b.add(row, t)
            f = load(x_in, index)
            c = b.select(b.fcmp_ordered("<", f, y), down, up)
            y = b.fadd(b.fmul(y, b.fsub(one, c)), b.fmul(c, f))
            b.store(y if io_double else b.fptrunc(y, io), b.gep(out, [index]))
            return [y]

        ir_loop(b, ir.Constant(i64, 0), n, [zero], sample)
        return []

    ir_loop(b, ir.Constant(i64, 0), batch, [], item)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=2)
def _compiled_one_pole(io_double: bool):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_one_pole_ir(io_double), "one_pole", [p, p, i64, i64, p, p])


def one_pole(x: torch.Tensor, falling: torch.Tensor, rising: torch.Tensor) -> torch.Tensor:
    """Branching one-pole recursion over (batch, samples) ``x`` from a zero state (see :func:`_build_one_pole_ir`).

    ``falling`` / ``rising``: (batch,) coefficients used while the input is below / at or
    above the output.  The render-path twin of torchcomp's ``compressor_core(x, 0, falling, rising)``.
    """
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"one_pole needs float32 or float64 input, got {x.dtype}")
    device, dtype = x.device, x.dtype
    f = x.detach().to("cpu").contiguous()
    batch, n = f.shape
    down, up = (_per_item(torch.as_tensor(v), batch, dtype) for v in (falling, rising))
    out = torch.empty_like(f)
    _compiled_one_pole(dtype == torch.float64)(f.data_ptr(), out.data_ptr(), batch, n, down.data_ptr(), up.data_ptr())
    return out.to(device)


def _build_family_ir(io_double: bool) -> str:
    """LLVM IR of ``void family(T* peak, T* out, i64 batch, i64 n, T* attack, T* release, T* rms_coef,
    T* detector_rms, T* linear_envelope, T* threshold, T* ratio, T* knee, T floor)``.

    Every detector family in one pass (:func:`dmst.effects.compressor.detector_family_gain_db`
    written out per sample, float64 state from 0), from the linked peak ``p``::

        ms    = ms * (1 - c) + c * p * p                    # RMS detector's mean square
        level = (1 - w) * 20 log10(max(p, floor)) + w * 10 log10(max(ms, floor^2))
        f     = curve(level); held / gain as in _build_ir   # dB-domain ballistics -> g_db
        d     = 10 ** (level / 20); k = a if d > env else r
        env   = env * (1 - k) + k * d                       # linear-envelope ballistics
        out   = (1 - m) * g_db + m * curve(20 log10(max(env, floor)))
    """
    import llvmlite.ir as ir

    io = ir.DoubleType() if io_double else ir.FloatType()
    f64, i64 = ir.DoubleType(), ir.IntType(64)
    ptr = io.as_pointer()
    module = ir.Module(name="dmst_family")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64, i64] + [ptr] * 8 + [f64]), name="family")
    peak_in, out, batch, n, attack, release, rms_coef, rms_w, lin_m, threshold, ratio, knee, floor = fn.args
    log = module.declare_intrinsic("llvm.log", [f64])
    exp = module.declare_intrinsic("llvm.exp", [f64])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one, two = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0), ir.Constant(f64, 2.0)
    ten_ln10, twenty_ln10 = ir.Constant(f64, 10.0 / math.log(10.0)), ir.Constant(f64, 20.0 / math.log(10.0))
    ln10_20 = ir.Constant(f64, 2.302585092994046 / 20)
    floor2 = b.fmul(floor, floor)

    def load(pointer, index):
        value = b.load(b.gep(pointer, [index]))
        return value if io_double else b.fpext(value, f64)

    def fmax(v, lo):
        return b.select(b.fcmp_ordered("<", v, lo), lo, v)

    def item(i):
        a, r, c = load(attack, i), load(release, i), load(rms_coef, i)
        w, m = load(rms_w, i), load(lin_m, i)
        keep_a, keep_r, keep_c, keep_w, keep_m = (b.fsub(one, v) for v in (a, r, c, w, m))
        thr, width = load(threshold, i), load(knee, i)
        slope = b.fsub(b.fdiv(one, load(ratio, i)), one)
        half = b.fdiv(width, two)
        row = b.mul(i, n)

        def curve(level):
            return ir_soft_knee(b, b.fsub(level, thr), slope, width, half)

        def sample(t, ms, held, gain, env):
            index = b.add(row, t)
            p = load(peak_in, index)
            ms = b.fadd(b.fmul(ms, keep_c), b.fmul(c, b.fmul(p, p)))
            # 20 log10 and 10 log10 as multiples of libm's natural logarithm, the faster of the two.
            peak_db = b.fmul(twenty_ln10, b.call(log, [fmax(p, floor)]))
            rms_db = b.fmul(ten_ln10, b.call(log, [fmax(ms, floor2)]))
            level = b.fadd(b.fmul(keep_w, peak_db), b.fmul(w, rms_db))
            f = curve(level)
            held, gain = ir_branching_step(b, f, held, gain, a, keep_a, r, keep_r)
            d = b.call(exp, [b.fmul(level, ln10_20)])
            k = b.select(b.fcmp_ordered(">", d, env), a, r)
            env = b.fadd(b.fmul(env, b.fsub(one, k)), b.fmul(k, d))
            linear_gain = curve(b.fmul(twenty_ln10, b.call(log, [fmax(env, floor)])))
            g = b.fadd(b.fmul(keep_m, gain), b.fmul(m, linear_gain))
            b.store(g if io_double else b.fptrunc(g, io), b.gep(out, [index]))
            return [ms, held, gain, env]

        ir_loop(b, ir.Constant(i64, 0), n, [zero, zero, zero, zero], sample)
        return []

    ir_loop(b, ir.Constant(i64, 0), batch, [], item)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=2)
def _compiled_family(io_double: bool):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_family_ir(io_double), "family", [p, p, i64, i64] + [p] * 8 + [ctypes.c_double])


def family(peak: torch.Tensor, attack, release, rms_coef, detector_rms, linear_envelope, curve, floor: float) -> torch.Tensor:
    """Gain in dB (batch, samples) of any detector family from the linked peak (batch, samples), in one compiled pass.

    Coefficients and blends are (batch,) or one value; ``curve = (threshold_db, ratio, knee_db)``.
    """
    if peak.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"family needs float32 or float64 input, got {peak.dtype}")
    device, dtype = peak.device, peak.dtype
    x = peak.detach().to("cpu").contiguous()
    batch, n = x.shape
    threshold_db, ratio, knee_db = curve
    args = [_per_item(torch.as_tensor(v), batch, dtype) for v in
            (attack, release, rms_coef, detector_rms, linear_envelope, threshold_db, ratio, knee_db)]
    args[-1] = args[-1].clamp_min(1e-6)  # as gain_computer clamps the knee
    out = torch.empty_like(x)
    _compiled_family(dtype == torch.float64)(x.data_ptr(), out.data_ptr(), batch, n, *(v.data_ptr() for v in args), float(floor))
    return out.to(device)


def _build_lookahead_ir() -> str:
    """LLVM IR of ``void lookahead_gain(float* peaks, float* out, i64 n, i64 w, double ceiling, double ceiling_lin,
    double release, double* cur, double* suffix, double* history)``: the limiter's gain path
    (:func:`dmst.effects.limiter.limiter`) in one pass, float64 state.

    With ``p[t] = max(peaks[t], peaks[t - 1])`` (both intervals around sample t) and zeros outside ``[0, n)``::

        need[t]  = min(0, ceiling - 20 log10 p[t])       (0, and no logarithm, where p[t] <= ceiling_lin)
        ahead[i] = min need[i - w + 1 .. i]              i < n + w - 1 (the lookahead, on the w - 1 zeros padded in front)
        held     = ahead if ahead < held else held (1 - release) + release ahead
        out[i - w + 1] = mean held[i - w + 1 .. i]       (the moving average over the lookahead)

    The window minimum is van Herk / Gil-Werman's: blocks of ``w``, the suffix minima of the block before
    (``suffix``, from ``cur``) against the running prefix minimum.  ``cur``, ``suffix``, ``history``: ``w``
    doubles each, zero on entry.
    """
    import llvmlite.ir as ir

    f32, f64, i64 = ir.FloatType(), ir.DoubleType(), ir.IntType(64)
    fp, dp = f32.as_pointer(), f64.as_pointer()
    module = ir.Module(name="dmst_lookahead")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, fp, i64, i64, f64, f64, f64, dp, dp, dp]),
                     name="lookahead_gain")
    peaks, out, n, w, ceiling, ceiling_lin, release, cur, suffix, history = fn.args
    log10 = module.declare_intrinsic("llvm.log10", [f64])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one, twenty = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0), ir.Constant(f64, 20.0)
    i0, i1 = ir.Constant(i64, 0), ir.Constant(i64, 1)
    keep = b.fsub(one, release)
    total = b.sub(b.add(n, w), i1)
    blocks = b.sdiv(b.sub(b.add(total, w), i1), w)
    inv_w = b.fdiv(one, b.sitofp(w, f64))

    def fmin(u, v):
        return b.select(b.fcmp_ordered("<", u, v), u, v)

    def peak_at(t):  # peaks[t] as float64, 0 outside [0, n)
        inside = b.and_(b.icmp_signed(">=", t, i0), b.icmp_signed("<", t, n))
        safe = b.select(inside, t, i0)
        return b.select(inside, b.fpext(b.load(b.gep(peaks, [safe])), f64), zero)

    def block(k, held, total_sum):
        # The suffix minima of the block before: suffix[j] = min cur[j + 1 .. w - 1] (0 for j = w - 1).
        def backward(m, s):
            j = b.sub(b.sub(w, i1), m)
            b.store(s, b.gep(suffix, [j]))
            return [fmin(s, b.load(b.gep(cur, [j])))]

        ir_loop(b, i0, w, [zero], backward)
        start = b.mul(k, w)
        stop = b.sub(b.select(b.icmp_signed("<", b.add(start, w), total), b.add(start, w), total), start)

        def sample(j, prefix, held, total_sum):
            i = b.add(start, j)
            p = peak_at(i)
            before = peak_at(b.sub(i, i1))
            p = b.select(b.fcmp_ordered(">", before, p), before, p)
            entry = b.block
            with b.if_then(b.fcmp_ordered(">", p, ceiling_lin)):
                over = fmin(b.fsub(ceiling, b.fmul(twenty, b.call(log10, [p]))), zero)
                over_block = b.block
            need = b.phi(f64)
            need.add_incoming(zero, entry)
            need.add_incoming(over, over_block)
            b.store(need, b.gep(cur, [j]))
            prefix = fmin(prefix, need)
            ahead = fmin(prefix, b.load(b.gep(suffix, [j])))
            released = b.fadd(b.fmul(held, keep), b.fmul(release, ahead))
            held = b.select(b.fcmp_ordered("<", ahead, held), ahead, released)
            slot = b.gep(history, [j])
            total_sum = b.fadd(b.fsub(total_sum, b.load(slot)), held)
            b.store(held, slot)
            t = b.sub(b.add(i, i1), w)
            with b.if_then(b.icmp_signed(">=", t, i0)):
                b.store(b.fptrunc(b.fmul(total_sum, inv_w), f32), b.gep(out, [t]))
            return [prefix, held, total_sum]

        _, held, total_sum = ir_loop(b, i0, stop, [zero, held, total_sum], sample)
        return [held, total_sum]

    ir_loop(b, i0, blocks, [zero, zero], block)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=1)
def _compiled_lookahead():
    p, i64, d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    return compile_function(_build_lookahead_ir(), "lookahead_gain", [p, p, i64, i64, d, d, d, p, p, p])


def lookahead_gain(peaks: torch.Tensor, ceiling_db: torch.Tensor, release: torch.Tensor, window: int) -> torch.Tensor:
    """The true-peak limiter's gain in dB (batch, n), float32, from the interval peaks (batch, n) in one compiled pass
    per item (:func:`_build_lookahead_ir`); ``ceiling_db`` and ``release`` (its one-pole coefficient): (batch,)."""
    p = peaks.detach().to("cpu", torch.float32).contiguous()
    batch, n = p.shape
    out = torch.empty(batch, n, dtype=torch.float32)
    kernel = _compiled_lookahead()
    for i in range(batch):
        c = float(ceiling_db[i])
        scratch = torch.zeros(3, window, dtype=torch.float64)
        kernel(p[i].data_ptr(), out[i].data_ptr(), n, window, c, 10 ** (c / 20), float(release[i]),
               *(s.data_ptr() for s in scratch))
    return out


def _build_detector_ir() -> str:
    """LLVM IR of ``void detector_gain(float* x, i64 channels, i64 n, float* out, i64 w, double threshold_db,
    double threshold_lin, double sign, double slope, double range_db, double attack, double release, float* cur,
    float* suffix)``: the gate's and the de-esser's level detector, static curve and ballistics in one pass
    (:mod:`dmst.effects.gate`, :mod:`dmst.effects.deesser`), float64 state.

    For each sample ``t`` of one item (``x``: ``channels`` rows of ``n``)::

        a     = max over channels |x[c, t]|;  s = max a[t - w + 1 .. t]      (the hold; w = 1: none)
        over  = sign (20 log10 max(s, 1e-6) - threshold_db)                  (gate: sign -1, de-esser: +1)
        f     = max(slope * over, -range_db) if over > 0 else 0              (the logarithm only then: s beyond
                                                                              threshold_lin on over's side)
        f' = sign f;  held, gain as in :func:`_build_ir` on f';  out[t] = sign gain

    (the gate's ballistics run on the negated gain, so its "attack" is it opening).  The window maximum
    is van Herk / Gil-Werman's, as in :func:`_build_lookahead_ir`; ``cur``, ``suffix``: ``w`` floats each, zero.
    """
    import llvmlite.ir as ir

    f32, f64, i64 = ir.FloatType(), ir.DoubleType(), ir.IntType(64)
    fp = f32.as_pointer()
    module = ir.Module(name="dmst_detector")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [fp, i64, i64, fp, i64] + [f64] * 7 + [fp, fp]),
                     name="detector_gain")
    x, channels, n, out, w, thr, thr_lin, sign, slope, range_db, attack, release, cur, suffix = fn.args
    log10 = module.declare_intrinsic("llvm.log10", [f64])
    fabs = module.declare_intrinsic("llvm.fabs", [f32])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one, twenty = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0), ir.Constant(f64, 20.0)
    zero32, floor = ir.Constant(f32, 0.0), ir.Constant(f64, 1e-6)
    i0, i1 = ir.Constant(i64, 0), ir.Constant(i64, 1)
    keep_a, keep_r = b.fsub(one, attack), b.fsub(one, release)
    below = b.fcmp_ordered("<", sign, zero)  # gate: the curve acts below the threshold
    blocks = b.sdiv(b.sub(b.add(n, w), i1), w)

    def fmax32(u, v):
        return b.select(b.fcmp_ordered(">", u, v), u, v)

    def block(k, held, gain):
        def backward(m, s):  # suffix[j] = max cur[j + 1 .. w - 1] of the block before (0 for j = w - 1)
            j = b.sub(b.sub(w, i1), m)
            b.store(s, b.gep(suffix, [j]))
            return [fmax32(s, b.load(b.gep(cur, [j])))]

        ir_loop(b, i0, w, [zero32], backward)
        start = b.mul(k, w)
        stop = b.sub(b.select(b.icmp_signed("<", b.add(start, w), n), b.add(start, w), n), start)

        def sample(j, prefix, held, gain):
            t = b.add(start, j)

            def channel(c, a):
                return [fmax32(a, b.call(fabs, [b.load(b.gep(x, [b.add(b.mul(c, n), t)]))]))]

            a, = ir_loop(b, i0, channels, [zero32], channel)
            b.store(a, b.gep(cur, [j]))
            prefix = fmax32(prefix, a)
            s = b.fpext(fmax32(prefix, b.load(b.gep(suffix, [j]))), f64)
            beyond = b.select(below, b.fcmp_ordered("<", s, thr_lin), b.fcmp_ordered(">", s, thr_lin))
            entry = b.block
            with b.if_then(beyond):
                level = b.fmul(twenty, b.call(log10, [b.select(b.fcmp_ordered("<", s, floor), floor, s)]))
                over = b.fmul(sign, b.fsub(level, thr))
                curve = b.fmul(slope, over)
                curve = b.select(b.fcmp_ordered("<", curve, b.fsub(zero, range_db)), b.fsub(zero, range_db), curve)
                curve = b.select(b.fcmp_ordered(">", over, zero), curve, zero)
                curve_block = b.block
            f = b.phi(f64)
            f.add_incoming(zero, entry)
            f.add_incoming(curve, curve_block)
            f = b.fmul(sign, f)
            held, gain = ir_branching_step(b, f, held, gain, attack, keep_a, release, keep_r)
            b.store(b.fptrunc(b.fmul(sign, gain), f32), b.gep(out, [t]))
            return [prefix, held, gain]

        _, held, gain = ir_loop(b, i0, stop, [zero32, held, gain], sample)
        return [held, gain]

    ir_loop(b, i0, blocks, [zero, zero], block)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=1)
def _compiled_detector():
    p, i64, d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    return compile_function(_build_detector_ir(), "detector_gain", [p, i64, i64, p, i64] + [d] * 7 + [p, p])


def detector_gain(x: torch.Tensor, window: int, threshold_db, sign: float, slope, range_db, attack, release) -> torch.Tensor:
    """Gain in dB (batch, n), float32, of a linked peak detector with a ``window``-sample hold, a hard-knee curve
    acting on the ``sign`` side of ``threshold_db`` (-1: below, the gate; +1: above, the de-esser) with ``slope``
    dB per dB, no lower than ``-range_db``, and the compressor's ballistics (mirrored for the gate), from float32
    (batch, channels, n) ``x`` in one compiled pass per item (:func:`_build_detector_ir`).  Parameters: (batch,)
    tensors or floats; ``attack`` and ``release`` are one-pole coefficients."""
    x = x.detach().to("cpu", torch.float32).contiguous()
    batch, channels, n = x.shape
    out = torch.zeros(batch, n, dtype=torch.float32)
    kernel = _compiled_detector()
    values = [torch.as_tensor(v).detach().to("cpu", torch.float64).reshape(-1).expand(batch)
              for v in (threshold_db, slope, range_db, attack, release)]
    for i in range(batch):
        thr, slope_i, range_i, a, r = (float(v[i]) for v in values)
        scratch = torch.zeros(2, window, dtype=torch.float32)
        kernel(x[i].data_ptr(), channels, n, out[i].data_ptr(), window, thr, 10 ** (thr / 20), float(sign), slope_i,
               range_i, a, r, *(s.data_ptr() for s in scratch))
    return out
