"""Recursive biquad filtering as compiled loops, for long signals without gradients.

The renderer's EQ, the loudness meter's K-weighting and the saturation's DC blocker
run over whole files.  As recursions (transposed direct form II, float64 state, as
``scipy.signal.sosfilt``) they are exact: no impulse response is truncated.  Training
uses the differentiable FFT path (:func:`dmst.effects.eq.sosfilt_fft`);
``tests/test_eq.py`` checks this one against scipy.

A recursion over one signal is latency-bound: each output waits for the previous one
(about 4 ns per sample and section here), while the CPU could do several times more
arithmetic.  So each row is cut into ``LANES`` consecutive chunks that run side by
side as the lanes of one SIMD vector.  A chunk's filter state is unknown where it
starts, so each lane first runs over the ``warmup`` samples before its chunk (after
it, running backward), from zero state: a stable filter forgets its initial state
geometrically, at the rate of its slowest pole, and ``warmup`` is chosen from the
poles so that what is left is below ``FORGET`` (about 1e-16) of the state.  This is
the overlap idea of block-parallel IIR filtering; the first lane starts at the true
start of the signal, so short signals, and filters too slow to forget within a
chunk, are filtered exactly as in one sequential pass.
"""
from __future__ import annotations

import ctypes
import functools
import math

import torch

from ._llvm import compile_function, ir_loop, kernel_threads, run_jobs

LANES = 16  # chunks per vector: 4 AVX2 registers of 4 doubles, enough to hide the recursion's latency
BLOCK_STEPS = 256  # steps per tile: LANES x 256 doubles (32 KiB) stay in L1 while every section runs over them
FORGET = 1e-16  # what is left of a lane's wrong initial state when its chunk starts
MIN_GROUP_STEPS = 2**17  # a row is split across threads only into pieces at least this long


def _build_ir(io_double: bool) -> str:
    """LLVM IR of ``void sosfilt_lanes(T* src, T* dst, i64 n, i64 chunk, i64 warmup, i64 first, double* sos,
    i64 sections, i64 backward)``.

    One row ``src`` of ``n`` samples (zero outside ``[0, n)``); lane ``j`` filters chunk
    ``c = first + j``, the samples ``[c * chunk, (c + 1) * chunk)``, after ``warmup``
    samples before it (or after it when ``backward``), and writes them to ``dst`` (which
    holds at least ``(first + LANES) * chunk`` samples).  ``sos`` is (sections, 6)
    ``[b0, b1, b2, 1, a1, a2]``; each section runs, per tile of ``BLOCK_STEPS`` steps::

        y = b0 * x + z1;  z1 = b1 * x - a1 * y + z2;  z2 = b2 * x - a2 * y
    """
    import llvmlite.ir as ir

    io = ir.DoubleType() if io_double else ir.FloatType()
    f64, i32, i64 = ir.DoubleType(), ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(f64, LANES)
    module = ir.Module(name="dmst_biquads")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [io.as_pointer(), io.as_pointer(), i64, i64, i64, i64,
                                                               f64.as_pointer(), i64, i64]), name="sosfilt_lanes")
    src, dst, n, chunk, warmup, first, sos, sections, backward = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def const(value):
        return ir.Constant(i64, value)

    zero_vec = ir.Constant(vec, [0.0] * LANES)
    tile = b.alloca(vec, size=BLOCK_STEPS)
    state = b.alloca(vec, size=b.mul(sections, const(2)))  # z1, z2 of each section
    steps = b.add(warmup, chunk)
    span = b.sub(b.add(steps, warmup), const(1))  # backward, step k reads chunk offset span - k - warmup
    is_backward = b.icmp_signed("!=", backward, const(0))
    lane_start = [b.mul(b.add(first, const(j)), chunk) for j in range(LANES)]

    def clear(s):
        b.store(zero_vec, b.gep(state, [s]))
        return []

    ir_loop(b, const(0), b.mul(sections, const(2)), [], clear)

    def sample_index(k):  # where lane 0's step k is in the row, relative to its chunk start, minus the warm-up
        return b.sub(b.select(is_backward, b.sub(span, k), k), warmup)

    def tile_body(t):
        k0 = b.mul(t, const(BLOCK_STEPS))
        remaining = b.sub(steps, k0)
        m = b.select(b.icmp_signed("<", remaining, const(BLOCK_STEPS)), remaining, const(BLOCK_STEPS))

        def gather(kk):  # the tile's inputs, zero outside the row
            offset = sample_index(b.add(k0, kk))
            lanes = ir.Constant(vec, ir.Undefined)
            for j in range(LANES):
                i = b.add(offset, lane_start[j])
                inside = b.and_(b.icmp_signed(">=", i, const(0)), b.icmp_signed("<", i, n))
                value = b.load(b.gep(src, [b.select(inside, i, const(0))]))
                value = value if io_double else b.fpext(value, f64)
                lanes = b.insert_element(lanes, b.select(inside, value, ir.Constant(f64, 0.0)), ir.Constant(i32, j))
            b.store(lanes, b.gep(tile, [kk]))
            return []

        ir_loop(b, const(0), m, [], gather)

        def section(s):
            base = b.mul(s, const(6))
            coefficient = []
            for k in range(6):
                one = b.insert_element(ir.Constant(vec, ir.Undefined), b.load(b.gep(sos, [b.add(base, const(k))])),
                                       ir.Constant(i32, 0))
                coefficient.append(b.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)))
            b0, b1, b2, _, a1, a2 = coefficient
            z1_at, z2_at = b.gep(state, [b.mul(s, const(2))]), b.gep(state, [b.add(b.mul(s, const(2)), const(1))])

            def step(kk, z1, z2):
                at = b.gep(tile, [kk])
                x = b.load(at)
                y = b.fadd(b.fmul(b0, x), z1)
                b.store(y, at)
                return [b.fadd(b.fsub(b.fmul(b1, x), b.fmul(a1, y)), z2), b.fsub(b.fmul(b2, x), b.fmul(a2, y))]

            z1, z2 = ir_loop(b, const(0), m, [b.load(z1_at), b.load(z2_at)], step)
            b.store(z1, z1_at)
            b.store(z2, z2_at)
            return []

        ir_loop(b, const(0), sections, [], section)

        def scatter(kk):  # warm-up steps are not written
            k = b.add(k0, kk)
            with b.if_then(b.icmp_signed(">=", k, warmup)):
                offset = sample_index(k)
                lanes = b.load(b.gep(tile, [kk]))
                for j in range(LANES):
                    value = b.extract_element(lanes, ir.Constant(i32, j))
                    b.store(value if io_double else b.fptrunc(value, io), b.gep(dst, [b.add(offset, lane_start[j])]))
            return []

        ir_loop(b, const(0), m, [], scatter)
        return []

    ir_loop(b, const(0), b.sdiv(b.add(steps, const(BLOCK_STEPS - 1)), const(BLOCK_STEPS)), [], tile_body)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=2)
def _compiled(io_double: bool):
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_ir(io_double), "sosfilt_lanes", [p, p, i64, i64, i64, i64, p, i64, i64])


def slowest_pole(sos: torch.Tensor) -> float:
    """The largest pole radius of the cascades ``sos`` (..., sections, 6), normalised to a0 = 1."""
    a1, a2 = sos[..., 4].double(), sos[..., 5].double()
    disc = a1 * a1 - 4 * a2
    root = disc.abs().sqrt()
    real = torch.maximum((-a1 + root).abs(), (-a1 - root).abs()) / 2
    return float(torch.where(disc < 0, a2.abs().sqrt(), real).max()) if sos.numel() else 0.0


def warmup_length(sos: torch.Tensor) -> int | None:
    """Samples after which the cascades' state has decayed below ``FORGET`` (1.5 times that: a cascade's
    repeated poles decay as t^k r^t); None for a filter that does not decay (a pole on or outside the unit circle)."""
    radius = slowest_pole(sos)
    if not radius < 1.0:
        return None
    if radius == 0.0:
        return 2
    return math.ceil(1.5 * math.log(FORGET) / math.log(radius)) + 2


def _plan(n: int, warmup: int | None) -> tuple[int, int, int]:
    """(groups, chunk, warm-up) for a row of ``n`` samples: ``groups`` kernel calls of ``LANES`` chunks each.

    Depends on the signal and the filter only, never on the thread count, so results
    do not change with the number of threads.  A warm-up reaching back to the row's start makes
    every lane exact (the sequential recursion); that is used when the filter's
    memory is longer than a chunk.
    """
    # Two calls (for two cores) once each chunk is at least twice its warm-up: at most 1.5x the work in half the time.
    groups = 2 if warmup is not None and n >= 2 * LANES * max(MIN_GROUP_STEPS // LANES, 2 * warmup) else 1
    chunk = -(-n // (LANES * groups))
    exact = (LANES * groups - 1) * chunk
    return groups, chunk, exact if warmup is None else min(warmup, exact)


def _run(src: torch.Tensor, dst: torch.Tensor, sos: torch.Tensor, backward: bool, plan: tuple[int, int, int]) -> None:
    """Filter each row of CPU ``src`` (rows, n; rows contiguous), zero-extended as far as ``plan`` reaches,
    into ``dst`` (rows, >= groups x ``LANES`` x chunk)."""
    rows, n = src.shape
    groups, chunk, warmup = plan
    kernel = _compiled(src.dtype == torch.float64)
    jobs = [(src[r].data_ptr(), dst[r].data_ptr(), n, chunk, warmup, g * LANES, sos[r].data_ptr(), sos.shape[1],
             int(backward)) for r in range(rows) for g in range(groups)]
    run_jobs(kernel, jobs, kernel_threads())


def _row_cascades(sos: torch.Tensor, batch: int, channels: int) -> torch.Tensor:
    sos = sos.detach().to("cpu", torch.float64)
    sos = sos / sos[..., 3:4]  # a0 = 1
    return sos.expand(batch, -1, -1).repeat_interleave(channels, dim=0).contiguous()  # one cascade per row


def sosfilt(x: torch.Tensor, sos: torch.Tensor, backward: bool = False) -> torch.Tensor:
    """Filter (batch, channels, samples) ``x`` with per-item cascades ``sos`` (batch or 1, sections, 6).

    The recursion of ``scipy.signal.sosfilt`` with zero initial state (run from the end
    to the start with ``backward=True``); float64 state, output in ``x``'s dtype
    (float32 or float64).  Runs on the CPU and returns a new tensor on ``x``'s device.
    """
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sosfilt needs float32 or float64 audio, got {x.dtype}")
    batch, channels, n = x.shape
    rows = _row_cascades(sos, batch, channels)
    plan = _plan(n, warmup_length(rows))
    src = x.detach().to("cpu").reshape(batch * channels, n).contiguous()
    dst = torch.empty(batch * channels, plan[0] * LANES * plan[1], dtype=x.dtype)
    _run(src, dst, rows, backward, plan)
    return dst[:, :n].reshape(batch, channels, n).to(x.device)


def sosfiltfilt(x: torch.Tensor, sos: torch.Tensor, tail: int) -> torch.Tensor:
    """Zero-phase filtering: ``sos`` forward over ``x`` and ``tail`` zeros after it, then backward.

    The same linear operator as :func:`dmst.effects.eq.sosfilt_fft` with ``zero_phase=True``
    (the squared magnitude response, no phase shift, zero-extended input), exact as long
    as the filter's response has died out within ``tail`` samples.
    """
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"sosfiltfilt needs float32 or float64 audio, got {x.dtype}")
    batch, channels, n = x.shape
    rows = _row_cascades(sos, batch, channels)
    length = n + tail
    plan = _plan(length, warmup_length(rows))
    src = x.detach().to("cpu").reshape(batch * channels, n).contiguous()
    forward = torch.empty(batch * channels, plan[0] * LANES * plan[1], dtype=x.dtype)
    _run(src, forward, rows, False, plan)  # src reads as zero past n: the tail
    backward = torch.empty_like(forward)
    _run(forward[:, :length], backward, rows, True, plan)
    return backward[:, :n].reshape(batch, channels, n).to(x.device)
