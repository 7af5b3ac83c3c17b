"""The feedback compressor's recursion: a compiled forward loop and its adjoint (exact gradients).

The detector of a feedback compressor reads the compressor's own output (Giannoulis,
Massberg and Reiss, "Digital Dynamic Range Compressor Design - A Tutorial and
Analysis", JAES 60(6), 2012, section 2, fig. 1b; the topology of the 1176, the LA-2A
and most classic hardware).  Per item ``b`` and sample ``n``, float64 state from 0,
with ``p`` the linked peak of the input, ``G = 10 ** (g / 20)`` the gain of the previous
sample, and ``sigma = 1 - ratio``::

    y     = p[n] * G                                   # the output's linked peak
    ms    = ms * (1 - c) + c * y * y                   # the RMS detector's mean square, of the output
    level = (1 - w) * 20 log10(max(y, floor)) + w * 10 log10(max(ms, floor^2))
    over  = level - threshold
    t     = soft_knee(over, sigma, knee)               # target gain, from the *output* level
    u     = clip((over + knee / 2) / knee, 0, 1)       # t's slope is sigma * u
    L     = 1 - sigma * u                              # the loop gain, 1 .. ratio
    k     = attack if t < g else release
    g     = g + (k / L) * (t - g)

Why ``sigma = 1 - ratio``: a gain falling ``ratio - 1`` dB per dB of output over the
threshold settles where ``g = (1 - R)(x + g - T)``, i.e. ``g = (1/R - 1)(x - T)``: the
feed-forward static curve of ratio R (a textbook loop with the feed-forward slope
``1/R - 1`` instead would settle at an effective ratio ``2 - 1/R``, never above 2:1).
Why ``k / L``: around a steady state the loop multiplies every change of the target by
the loop gain ``L``, so a one-pole smoother with coefficient ``k`` would close with
``1 - (1 - k L)``: times ``L`` faster (and unstable for ``k L > 2``).  Dividing by ``L``
keeps the closed loop's pole at ``1 - k``: a level step still moves 63 % of the gain
change in ``attack_ms`` and recovers 63 % in ``release_ms``, whatever the ratio.
The knee (``soft_knee`` on the output level, :mod:`._dynamics`) then spans, in input
level, from ``threshold - knee/2`` to ``threshold + ratio * knee/2``.

Rendering runs :func:`forward` (LLVM IR, :mod:`._llvm`); training runs the same
compiled loop, saving its states, inside :class:`FeedbackGain`, whose backward pass is
the adjoint recursion run from the last sample to the first (a Numba loop).
"""
from __future__ import annotations

import ctypes
import functools
import math

import torch

from ._ballistics import _per_item, ir_soft_knee
from ._llvm import compile_function, ir_loop

LN10_20 = math.log(10) / 20


def _build_ir(io_double: bool) -> str:
    """LLVM IR of ``void feedback(T* peak, T* out, i64 batch, i64 n, T* attack, T* release, T* rms_coef,
    T* detector_rms, T* threshold, T* ratio, T* knee, double floor, i64 save, double* ms_out, double* t_out,
    double* over_out, T* peak_db)``: the recursion of the module docstring; with ``save`` != 0 it also stores ``ms``,
    ``t`` and ``over`` of every sample (float64) for the adjoint.  ``peak_db`` is ``20 log10 peak``: the output's
    peak level is then ``max(peak_db + g, 20 log10 floor)``, and with ``detector_rms`` 0 (and nothing saved) the
    loop skips the mean square and has no exponential or logarithm at all."""
    import llvmlite.ir as ir

    io = ir.DoubleType() if io_double else ir.FloatType()
    f64, i64 = ir.DoubleType(), ir.IntType(64)
    ptr, dptr = io.as_pointer(), f64.as_pointer()
    module = ir.Module(name="dmst_feedback")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64, i64] + [ptr] * 7 + [f64, i64, dptr, dptr, dptr,
                                                                                                ptr]),
                     name="feedback")
    (peak_in, out, batch, n, attack, release, rms_coef, rms_w, threshold, ratio, knee, floor, save,
     ms_out, t_out, over_out, peak_db_in) = fn.args
    log10 = module.declare_intrinsic("llvm.log10", [f64])
    log = module.declare_intrinsic("llvm.log", [f64])
    exp = module.declare_intrinsic("llvm.exp", [f64])
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero, one, two = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0), ir.Constant(f64, 2.0)
    ten, twenty, ln10_20 = ir.Constant(f64, 10.0), ir.Constant(f64, 20.0), ir.Constant(f64, LN10_20)
    floor2 = b.fmul(floor, floor)
    floor_db = b.fmul(twenty, b.call(log10, [floor]))
    ten_ln10 = ir.Constant(f64, 10.0 / math.log(10.0))
    saving = b.icmp_signed("!=", save, ir.Constant(i64, 0))

    def load(pointer, index):
        value = b.load(b.gep(pointer, [index]))
        return value if io_double else b.fpext(value, f64)

    def fmax(v, lo):
        return b.select(b.fcmp_ordered("<", v, lo), lo, v)

    def item(i):
        a, r, c, w = load(attack, i), load(release, i), load(rms_coef, i), load(rms_w, i)
        keep_c, keep_w = b.fsub(one, c), b.fsub(one, w)
        thr, width = load(threshold, i), load(knee, i)
        sigma = b.fsub(one, load(ratio, i))
        half = b.fdiv(width, two)
        above_gain = b.fsub(one, sigma)  # the loop gain above the knee (u = 1)
        a_above, r_above = b.fdiv(a, above_gain), b.fdiv(r, above_gain)
        row = b.mul(i, n)
        # The mean square (an exponential and a logarithm a sample) only where it counts or is saved.
        rms = b.or_(saving, b.fcmp_ordered("!=", w, zero))

        def sample(t, ms, g):
            index = b.add(row, t)
            # 20 log10 of the output's peak y = p 10^(g/20) is 20 log10 p + g: no logarithm in the loop for it.
            peak_db = fmax(b.fadd(load(peak_db_in, index), g), floor_db)
            entry = b.block
            with b.if_then(rms):
                y = b.fmul(load(peak_in, index), b.call(exp, [b.fmul(g, ln10_20)]))
                new_ms = b.fadd(b.fmul(ms, keep_c), b.fmul(c, b.fmul(y, y)))
                # 10 log10 as (10 / ln 10) ln: libm's natural logarithm is the faster, and it is on the loop's path.
                rms_db = b.fmul(ten_ln10, b.call(log, [fmax(new_ms, floor2)]))
                rms_block = b.block
            ms_phi, rms_phi = b.phi(f64), b.phi(f64)
            ms_phi.add_incoming(ms, entry)
            ms_phi.add_incoming(new_ms, rms_block)
            rms_phi.add_incoming(zero, entry)
            rms_phi.add_incoming(rms_db, rms_block)
            ms = ms_phi
            level = b.fadd(b.fmul(keep_w, peak_db), b.fmul(w, rms_phi))
            over = b.fsub(level, thr)
            # Outside the knee u is 0 or 1, so the target and k / L take values fixed per item (the same
            # operations, computed once): the divisions run only inside the knee, off the usual path.
            above = b.fcmp_ordered(">", over, half)
            outside = b.or_(above, b.fcmp_ordered("<", over, b.fsub(zero, half)))
            fixed_target = b.select(above, b.fmul(sigma, over), zero)
            fixed_a, fixed_r = b.select(above, a_above, a), b.select(above, r_above, r)
            entry = b.block
            with b.if_then(b.not_(outside)):
                knee_target = ir_soft_knee(b, over, sigma, width, half)
                u = b.fdiv(b.fadd(over, half), width)
                loop_gain = b.fsub(one, b.fmul(sigma, u))
                knee_a, knee_r = b.fdiv(a, loop_gain), b.fdiv(r, loop_gain)
                knee_block = b.block
            target, k_a, k_r = b.phi(f64), b.phi(f64), b.phi(f64)
            for phi, fixed, knee_value in ((target, fixed_target, knee_target), (k_a, fixed_a, knee_a), (k_r, fixed_r, knee_r)):
                phi.add_incoming(fixed, entry)
                phi.add_incoming(knee_value, knee_block)
            k = b.select(b.fcmp_ordered("<", target, g), k_a, k_r)
            g = b.fadd(g, b.fmul(k, b.fsub(target, g)))
            b.store(g if io_double else b.fptrunc(g, io), b.gep(out, [index]))
            with b.if_then(saving):
                b.store(ms, b.gep(ms_out, [index]))
                b.store(target, b.gep(t_out, [index]))
                b.store(over, b.gep(over_out, [index]))
            return [ms, g]

        ir_loop(b, ir.Constant(i64, 0), n, [zero, zero], sample)
        return []

    ir_loop(b, ir.Constant(i64, 0), batch, [], item)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=2)
def _compiled(io_double: bool):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_ir(io_double), "feedback", [p, p, i64, i64] + [p] * 7 + [ctypes.c_double, i64, p, p, p, p])


def _items(values, batch: int, dtype) -> list[torch.Tensor]:
    return [_per_item(torch.as_tensor(v), batch, dtype) for v in values]


def forward(peak: torch.Tensor, attack, release, rms_coef, detector_rms, threshold_db, ratio, knee_db, floor: float,
            save: bool = False):
    """Gain in dB (batch, samples) of the feedback recursion from the linked input peak (batch, samples).

    Coefficients, blend and curve: (batch,) or one value (``knee_db`` > 0).  With ``save``,
    returns ``(gain, ms, target, over)``, the last three float64, for :func:`adjoint`.
    """
    if peak.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the feedback compressor needs float32 or float64 input, got {peak.dtype}")
    device, dtype = peak.device, peak.dtype
    x = peak.detach().to("cpu").contiguous()
    batch, n = x.shape
    args = _items((attack, release, rms_coef, detector_rms, threshold_db, ratio, knee_db), batch, dtype)
    out = torch.empty_like(x)
    states = [torch.empty(batch, n, dtype=torch.float64) if save else torch.empty(0, dtype=torch.float64) for _ in range(3)]
    peak_db = torch.log10(x).mul_(20)  # vectorised, in the input's precision (log10 0 = -inf: the floor then)
    _compiled(dtype == torch.float64)(x.data_ptr(), out.data_ptr(), batch, n, *(v.data_ptr() for v in args), float(floor),
                                      int(save), *(s.data_ptr() for s in states), peak_db.data_ptr())
    if save:
        return (out.to(device), *states)
    return out.to(device)


@functools.lru_cache(maxsize=1)
def _adjoint_kernel():
    from numba import njit

    @njit(cache=False, nogil=True)
    def kernel(p, g, ms, t, over, grad_out, a, r, c, w, thr, sigma, width, floor,
               grad_p, grad_a, grad_r, grad_c, grad_w, grad_thr, grad_sigma, grad_width):
        ln10_20 = math.log(10.0) / 20.0
        to_db20 = 20.0 / math.log(10.0)
        to_db10 = 10.0 / math.log(10.0)
        floor2 = floor * floor
        for i in range(p.shape[0]):
            ai, ri, ci, wi, si, ki = a[i], r[i], c[i], w[i], sigma[i], width[i]
            half = ki / 2.0
            lam_g = 0.0  # d loss / d g[n], from the samples after n
            lam_m = 0.0  # d loss / d ms[n]
            ga = gr = gc = gw = gt = gs = gk = 0.0
            for n in range(p.shape[1] - 1, -1, -1):
                g_prev = g[i, n - 1] if n > 0 else 0.0
                ms_prev = ms[i, n - 1] if n > 0 else 0.0
                lam_g += grad_out[i, n]
                gain = math.exp(g_prev * ln10_20)
                y = p[i, n] * gain
                o, tn, msn = over[i, n], t[i, n], ms[i, n]
                knee = -half <= o <= half
                u = 1.0 if o > half else (0.0 if o < -half else (o + half) / ki)
                loop = 1.0 - si * u
                k = ai if tn < g_prev else ri
                beta = k / loop
                err = tn - g_prev
                # g[n] = g_prev + beta (t - g_prev): through t and through beta (the loop gain's compensation)
                d_over = beta * si * u + (err * k * si / (loop * loop * ki) if knee else 0.0)
                lam_over = lam_g * d_over
                gt -= lam_over
                lp = to_db20 * math.log(y if y > floor else floor)
                lr = to_db10 * math.log(msn if msn > floor2 else floor2)
                gw += lam_over * (lr - lp)
                if o > half:
                    dt_ds = o
                elif o < -half:
                    dt_ds = 0.0
                else:
                    dt_ds = (o + half) * (o + half) / (2.0 * ki)
                gs += lam_g * (beta * dt_ds + err * k * u / (loop * loop))
                if knee:
                    dt_dk = si * (u - u * u) / 2.0
                    dbeta_dk = k * si * (0.5 - u) / (ki * loop * loop)
                    gk += lam_g * (beta * dt_dk + err * dbeta_dk)
                if tn < g_prev:
                    ga += lam_g * err / loop
                else:
                    gr += lam_g * err / loop
                lam_ms = lam_m + (lam_over * wi * to_db10 / msn if msn > floor2 else 0.0)
                gc += lam_ms * (y * y - ms_prev)
                lam_y = lam_ms * 2.0 * ci * y + (lam_over * (1.0 - wi) * to_db20 / y if y > floor else 0.0)
                grad_p[i, n] = lam_y * gain
                lam_g = lam_g * (1.0 - beta) + lam_y * y * ln10_20
                lam_m = lam_ms * (1.0 - ci)
            grad_a[i], grad_r[i], grad_c[i], grad_w[i] = ga, gr, gc, gw
            grad_thr[i], grad_sigma[i], grad_width[i] = gt, gs, gk

    return kernel


class FeedbackGain(torch.autograd.Function):
    """The feedback recursion with exact gradients: compiled forward, adjoint backward (module docstring).

    ``apply(peak, attack, release, rms_coef, detector_rms, threshold_db, ratio, knee_db, floor)``;
    ``peak`` (batch, samples), the rest (batch,) (``knee_db`` > 0), ``floor`` a float.
    """

    @staticmethod
    def forward(ctx, peak, attack, release, rms_coef, detector_rms, threshold_db, ratio, knee_db, floor):
        g, ms, t, over = forward(peak.double(), attack, release, rms_coef, detector_rms, threshold_db, ratio, knee_db,
                                 floor, save=True)
        ctx.save_for_backward(peak, g, ms, t, over, attack, release, rms_coef, detector_rms, threshold_db, ratio, knee_db)
        ctx.floor = floor
        return g.to(peak.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        peak, g, ms, t, over, *params = ctx.saved_tensors
        batch, n = peak.shape
        cpu = [v.detach().to("cpu", torch.float64).reshape(-1).expand(batch).contiguous() for v in params]
        a, r, c, w, thr, ratio, knee = cpu
        grads = [torch.zeros(batch, dtype=torch.float64) for _ in range(7)]
        grad_p = torch.empty(batch, n, dtype=torch.float64)
        _adjoint_kernel()(peak.detach().to("cpu", torch.float64).contiguous().numpy(), g.cpu().numpy(), ms.numpy(),
                          t.numpy(), over.numpy(), grad_out.detach().to("cpu", torch.float64).contiguous().numpy(),
                          a.numpy(), r.numpy(), c.numpy(), w.numpy(), thr.numpy(), (1.0 - ratio).numpy(), knee.numpy(),
                          float(ctx.floor), grad_p.numpy(), *(v.numpy() for v in grads))
        ga, gr, gc, gw, gt, gs, gk = grads
        out = [grad_p, ga, gr, gc, gw, gt, -gs, gk]  # d sigma / d ratio = -1
        like = [peak, *params]
        return (*(o.to(v.device, v.dtype).reshape(v.shape) if ctx.needs_input_grad[j] else None
                  for j, (o, v) in enumerate(zip(out, like))), None)
