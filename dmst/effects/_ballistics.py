"""The compressor's two smoothing passes as one machine-code loop, for rendering without gradients.

The passes are branching recursions (see :mod:`dmst.effects.compressor`): they cannot
be vectorised, and a Python loop over millions of samples is far too slow.  The loop
is written here as LLVM IR and compiled once per process (:mod:`._llvm`).

State is kept in float64 whatever the input dtype (as torchcomp's Numba kernel does
for float32 input); the operations are the ones torchcomp's ``compressor_core`` runs,
in the same order, and ``tests/test_compressor.py`` checks the two against each other
and against a plain-Python loop.
"""
from __future__ import annotations

import ctypes
import functools

import torch

from ._llvm import compile_function


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
    entry, item_head, item_body, sample_head, sample_body, item_next, done = (
        fn.append_basic_block(name) for name in
        ("entry", "item_head", "item_body", "sample_head", "sample_body", "item_next", "done"))
    zero_i, one_i = ir.Constant(i64, 0), ir.Constant(i64, 1)
    zero, one, two = ir.Constant(f64, 0.0), ir.Constant(f64, 1.0), ir.Constant(f64, 2.0)

    def load(builder, pointer, index):
        value = builder.load(builder.gep(pointer, [index]))
        return value if io_double else builder.fpext(value, f64)

    builder = ir.IRBuilder(entry)
    use_curve = builder.icmp_signed("!=", curve, zero_i)
    builder.branch(item_head)

    builder.position_at_end(item_head)  # for b in range(batch)
    b = builder.phi(i64)
    b.add_incoming(zero_i, entry)
    builder.cbranch(builder.icmp_signed("<", b, batch), item_body, done)

    builder.position_at_end(item_body)
    a, r = load(builder, attack, b), load(builder, release, b)
    keep_a, keep_r = builder.fsub(one, a), builder.fsub(one, r)
    thr, width = load(builder, threshold, b), load(builder, knee, b)  # the curve's constants (knee > 0)
    slope = builder.fsub(builder.fdiv(one, load(builder, ratio, b)), one)
    half = builder.fdiv(width, two)
    row = builder.mul(b, n)
    builder.branch(sample_head)

    builder.position_at_end(sample_head)  # for t in range(n), carrying held and gain
    t, held, gain = builder.phi(i64), builder.phi(f64), builder.phi(f64)
    for phi, start in ((t, zero_i), (held, zero), (gain, zero)):
        phi.add_incoming(start, item_body)
    builder.cbranch(builder.icmp_signed("<", t, n), sample_body, item_next)

    builder.position_at_end(sample_body)
    index = builder.add(row, t)
    f = load(builder, f_in, index)
    over = builder.fsub(f, thr)
    bend = builder.fadd(over, half)
    in_knee = builder.fdiv(builder.fmul(builder.fmul(bend, bend), slope), builder.fmul(two, width))
    static = builder.select(builder.fcmp_ordered(">", over, half), builder.fmul(over, slope), in_knee)
    static = builder.select(builder.fcmp_ordered("<", over, builder.fsub(zero, half)), zero, static)
    f = builder.select(use_curve, static, f)
    released = builder.fadd(builder.fmul(held, keep_r), builder.fmul(r, f))
    new_held = builder.select(builder.fcmp_ordered("<", f, held), f, released)
    attacked = builder.fadd(builder.fmul(gain, keep_a), builder.fmul(a, new_held))
    new_gain = builder.select(builder.fcmp_ordered("<", new_held, gain), attacked, new_held)
    builder.store(new_gain if io_double else builder.fptrunc(new_gain, io), builder.gep(out, [index]))
    t.add_incoming(builder.add(t, one_i), sample_body)
    held.add_incoming(new_held, sample_body)
    gain.add_incoming(new_gain, sample_body)
    builder.branch(sample_head)

    builder.position_at_end(item_next)
    b.add_incoming(builder.add(b, one_i), item_next)
    builder.branch(item_head)

    builder.position_at_end(done)
    builder.ret_void()
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
