"""Recursive biquad filtering as one compiled loop, for long signals without gradients.

The loudness meter's K-weighting and the saturation's DC blocker are short cascades
(two sections, one section) run over whole files.  As recursions (transposed direct
form II, float64 state, as ``scipy.signal.sosfilt``) they cost a few nanoseconds per
sample and section, several times less than filtering by FFT, and they are exact: no
impulse response is truncated.  Training uses the differentiable FFT path
(:func:`dmst.effects.eq.sosfilt_fft`); ``tests/test_eq.py`` checks this one against
scipy.
"""
from __future__ import annotations

import ctypes
import functools

import torch

from ._llvm import compile_function


def _build_ir(io_double: bool) -> str:
    """LLVM IR of ``void sosfilt(T* x, i64 rows, i64 n, double* sos, i64 sections, i64 backward)``, in place.

    ``x`` is (rows, n); ``sos`` is (rows, sections, 6) ``[b0, b1, b2, 1, a1, a2]``.
    Each section, in order, over each row, from the last sample to the first when
    ``backward`` is 1 (transposed direct form II)::

        y = b0 * x + z1;  z1 = b1 * x - a1 * y + z2;  z2 = b2 * x - a2 * y
    """
    import llvmlite.ir as ir

    io = ir.DoubleType() if io_double else ir.FloatType()
    f64, i64 = ir.DoubleType(), ir.IntType(64)
    module = ir.Module(name="dmst_biquads")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [io.as_pointer(), i64, i64, f64.as_pointer(), i64, i64]),
                     name="sosfilt")
    x, rows, n, sos, sections, backward = fn.args
    names = ("entry", "row_head", "section_head", "section_body", "sample_head", "sample_body", "section_next",
             "row_next", "done")
    entry, row_head, section_head, section_body, sample_head, sample_body, section_next, row_next, done = (
        fn.append_basic_block(name) for name in names)
    zero_i, one_i, six = ir.Constant(i64, 0), ir.Constant(i64, 1), ir.Constant(i64, 6)
    zero = ir.Constant(f64, 0.0)
    builder = ir.IRBuilder(entry)
    builder.branch(row_head)

    builder.position_at_end(row_head)  # for r in range(rows)
    r = builder.phi(i64)
    r.add_incoming(zero_i, entry)
    builder.cbranch(builder.icmp_signed("<", r, rows), section_head, done)

    builder.position_at_end(section_head)  # for s in range(sections)
    s = builder.phi(i64)
    s.add_incoming(zero_i, row_head)
    builder.cbranch(builder.icmp_signed("<", s, sections), section_body, row_next)

    builder.position_at_end(section_body)
    base = builder.mul(builder.add(builder.mul(r, sections), s), six)
    b0, b1, b2, _, a1, a2 = (builder.load(builder.gep(sos, [builder.add(base, ir.Constant(i64, k))])) for k in range(6))
    row = builder.mul(r, n)
    builder.branch(sample_head)

    builder.position_at_end(sample_head)  # for t in range(n), carrying z1 and z2
    t, z1, z2 = builder.phi(i64), builder.phi(f64), builder.phi(f64)
    for phi, start in ((t, zero_i), (z1, zero), (z2, zero)):
        phi.add_incoming(start, section_body)
    builder.cbranch(builder.icmp_signed("<", t, n), sample_body, section_next)

    builder.position_at_end(sample_body)
    position = builder.select(builder.icmp_signed("!=", backward, zero_i), builder.sub(builder.sub(n, one_i), t), t)
    pointer = builder.gep(x, [builder.add(row, position)])
    xi = builder.load(pointer)
    xi = xi if io_double else builder.fpext(xi, f64)
    y = builder.fadd(builder.fmul(b0, xi), z1)
    new_z1 = builder.fadd(builder.fsub(builder.fmul(b1, xi), builder.fmul(a1, y)), z2)
    new_z2 = builder.fsub(builder.fmul(b2, xi), builder.fmul(a2, y))
    builder.store(y if io_double else builder.fptrunc(y, io), pointer)
    t.add_incoming(builder.add(t, one_i), sample_body)
    z1.add_incoming(new_z1, sample_body)
    z2.add_incoming(new_z2, sample_body)
    builder.branch(sample_head)

    builder.position_at_end(section_next)
    s.add_incoming(builder.add(s, one_i), section_next)
    builder.branch(section_head)

    builder.position_at_end(row_next)
    r.add_incoming(builder.add(r, one_i), row_next)
    builder.branch(row_head)

    builder.position_at_end(done)
    builder.ret_void()
    return str(module)


@functools.lru_cache(maxsize=2)
def _compiled(io_double: bool):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_ir(io_double), "sosfilt", [p, i64, i64, p, i64, i64])


def sosfilt(x: torch.Tensor, sos: torch.Tensor, backward: bool = False, copy: bool = True) -> torch.Tensor:
    """Filter (batch, channels, samples) ``x`` with per-item cascades ``sos`` (batch or 1, sections, 6).

    The recursion of ``scipy.signal.sosfilt`` with zero initial state (run from the end
    to the start with ``backward=True``); float64 state, output in ``x``'s dtype
    (float32 or float64).  Runs on the CPU; ``copy=False`` filters a contiguous CPU
    ``x`` in place.
    """
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sosfilt needs float32 or float64 audio, got {x.dtype}")
    batch, channels, n = x.shape
    sos = sos.detach().to("cpu", torch.float64)
    sos = sos / sos[..., 3:4]  # a0 = 1
    sos = sos.expand(batch, -1, -1).repeat_interleave(channels, dim=0).contiguous()  # one cascade per row
    y = x.detach().to("cpu", copy=True).contiguous() if copy else x
    _compiled(x.dtype == torch.float64)(y.data_ptr(), batch * channels, n, sos.data_ptr(), sos.shape[1], int(backward))
    return y.to(x.device)


def sosfiltfilt(x: torch.Tensor, sos: torch.Tensor, tail: int) -> torch.Tensor:
    """Zero-phase filtering: ``sos`` forward over ``x`` and ``tail`` zeros after it, then backward.

    The same linear operator as :func:`dmst.effects.eq.sosfilt_fft` with ``zero_phase=True``
    (the squared magnitude response, no phase shift, zero-extended input), exact as long
    as the filter's response has died out within ``tail`` samples.
    """
    n = x.shape[-1]
    y = torch.nn.functional.pad(x.detach().cpu(), (0, tail))  # a fresh contiguous copy, filtered in place
    sosfilt(y, sos, copy=False)
    sosfilt(y, sos, backward=True, copy=False)
    return y[..., :n].to(x.device)
