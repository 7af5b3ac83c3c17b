"""FIR filtering as a compiled, vectorised loop, for the renderer's resampling without gradients.

The saturation oversamples every file 2x and the true-peak meter 4x with torchaudio's
windowed-sinc kernels (a few dozen taps per phase).  ``torch.conv1d`` runs such a
one-channel filter far below what the CPU can do (about 3 GMAC/s here), so the
renderer runs the same taps as one machine-code loop instead: each step computes 64
consecutive outputs in eight 8-float registers, one fused multiply-add per tap and
register, split over the cores.  The sums are the ones ``conv1d`` computes, in
float32, in another order (equal to float rounding; ``tests/test_saturation.py``).
"""
from __future__ import annotations

import ctypes
import functools

import torch

from ._llvm import compile_function, ir_loop, kernel_threads, run_jobs

WIDTH = 8  # floats per register
REGISTERS = 8  # independent accumulators: enough to keep both FMA units busy despite their latency
STEP = WIDTH * REGISTERS  # outputs per step


def _ir_taps(b, fma, x, h, h_row, start_row, taps, acc):
    """IR of one FIR sum over ``taps`` for ``STEP`` consecutive outputs: each coefficient ``h[h_row * taps + k]``
    broadcast and multiply-added into the ``REGISTERS`` accumulators ``acc`` with ``x[start_row + k + ...]``."""
    import llvmlite.ir as ir

    i32, i64 = ir.IntType(32), ir.IntType(64)
    vec = ir.VectorType(ir.FloatType(), WIDTH)

    def tap(k, *acc):
        one = b.insert_element(ir.Constant(vec, ir.Undefined), b.load(b.gep(h, [b.add(b.mul(h_row, taps), k)])),
                               ir.Constant(i32, 0))
        c = b.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, WIDTH), [0] * WIDTH))
        start = b.add(start_row, k)
        return [b.call(fma, [c, b.load(b.bitcast(b.gep(x, [b.add(start, ir.Constant(i64, WIDTH * j))]), vec.as_pointer()),
                                       align=4), acc[j]])
                for j in range(REGISTERS)]

    return ir_loop(b, ir.Constant(i64, 0), taps, list(acc), tap)


def _build_ir() -> str:
    """LLVM IR of ``void fir_sum(float* x, i64 stride, i64 streams, float* h, i64 taps, float* y, i64 steps)``::

        y[n] = sum over i < streams, k < taps of  h[i * taps + k] * x[i * stride + n + k],   n < steps * STEP
    """
    import llvmlite.ir as ir

    f32, i64 = ir.FloatType(), ir.IntType(64)
    vec = ir.VectorType(f32, WIDTH)
    module = ir.Module(name="dmst_fir")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer(), i64, i64, f32.as_pointer(), i64,
                                                               f32.as_pointer(), i64]), name="fir_sum")
    x, stride, streams, h, taps, y, steps = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = ir.Function(module, ir.FunctionType(vec, [vec, vec, vec]), name=f"llvm.fma.v{WIDTH}f32")
    zero = ir.Constant(vec, [0.0] * WIDTH)

    def const(value):
        return ir.Constant(i64, value)

    def vector_at(pointer, index):
        return b.bitcast(b.gep(pointer, [index]), vec.as_pointer())

    def step(s):
        n0 = b.mul(s, const(STEP))

        def stream(i, *acc):
            return _ir_taps(b, fma, x, h, i, b.add(b.mul(i, stride), n0), taps, acc)

        acc = ir_loop(b, const(0), streams, [zero] * REGISTERS, stream)
        for j in range(REGISTERS):
            b.store(acc[j], vector_at(y, b.add(n0, const(WIDTH * j))), align=4)
        return []

    ir_loop(b, const(0), steps, [], step)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=1)
def _compiled():
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_ir(), "fir_sum", [p, i64, i64, p, i64, p, i64])


def readable_length(n: int, taps: int) -> int:
    """How many samples per stream :func:`fir_into` reads for ``n`` outputs (it works in whole steps)."""
    return -(-n // STEP) * STEP + taps - 1


def writable_length(n: int) -> int:
    """How many samples :func:`fir_into` writes for ``n`` outputs."""
    return -(-n // STEP) * STEP


def fir_into(x: torch.Tensor, h: torch.Tensor, out: torch.Tensor, n: int) -> None:
    """``out[j] = sum_i sum_k h[i, k] * x[i, j + k]`` for ``j < n``, float32 on the CPU.

    ``x``: (streams, L) with contiguous rows, ``L >= readable_length(n, taps)``; ``h``:
    (streams, taps) float32 contiguous; ``out``: contiguous, ``writable_length(n)``
    long (past ``n`` it gets the sums over whatever ``x`` holds there).
    """
    streams, length = x.shape
    taps = h.shape[-1]
    if n <= 0:
        return
    if length < readable_length(n, taps) or out.numel() < writable_length(n) or x.stride(-1) != 1 or not out.is_contiguous():
        raise ValueError("fir_into: buffers too short or not contiguous")
    steps = writable_length(n) // STEP
    pieces = max(1, min(kernel_threads(), steps // 64))  # pieces of >= 4096 outputs
    cuts = [steps * t // pieces for t in range(pieces + 1)]
    jobs = [(x.data_ptr() + 4 * STEP * lo, x.stride(0), streams, h.data_ptr(), taps, out.data_ptr() + 4 * STEP * lo,
             hi - lo) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
    run_jobs(_compiled(), jobs, pieces)


def fir_sum(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The "valid" correlation ``conv1d(x[None], h[None])[0, 0]`` of (streams, length) ``x`` with
    (streams, taps) ``h``, summed over the streams: ``length - taps + 1`` float32 outputs."""
    taps = h.shape[-1]
    n = x.shape[-1] - taps + 1
    if n <= 0:
        return x.new_zeros(0, dtype=torch.float32)
    x = torch.nn.functional.pad(x.to(torch.float32), (0, readable_length(n, taps) - x.shape[-1])).contiguous()
    out = torch.empty(writable_length(n), dtype=torch.float32)
    fir_into(x, h.to(torch.float32).contiguous(), out, n)
    return out[:n]


# ---------------------------------------------------------------------------
# The true peak of each sample interval, straight from the input: the oversampler's phases are summed
# in registers and only their largest magnitude is stored, so the (rows, phases, n) up-sampled signal
# (250 MB for 3 stereo minutes at 4x) is never written and read back.
# ---------------------------------------------------------------------------

def _build_peak_ir() -> str:
    """LLVM IR of ``void fir_peak(float* x, i64 stride, i64 rows, float* h, i64 taps, i64 phases, float* y, i64 steps)``::

        y[n] = max over i < rows, p < phases of | sum over k < taps of h[p * taps + k] * x[i * stride + n + k] |

    for ``n < steps * STEP``; each phase's sum is :func:`_build_ir`'s one-stream sum, in the same order.
    """
    import llvmlite.ir as ir

    f32, i64 = ir.FloatType(), ir.IntType(64)
    vec = ir.VectorType(f32, WIDTH)
    module = ir.Module(name="dmst_fir_peak")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer(), i64, i64, f32.as_pointer(), i64, i64,
                                                               f32.as_pointer(), i64]), name="fir_peak")
    x, stride, rows, h, taps, phases, y, steps = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = ir.Function(module, ir.FunctionType(vec, [vec, vec, vec]), name=f"llvm.fma.v{WIDTH}f32")
    fabs = ir.Function(module, ir.FunctionType(vec, [vec]), name=f"llvm.fabs.v{WIDTH}f32")
    zero = ir.Constant(vec, [0.0] * WIDTH)

    def const(value):
        return ir.Constant(i64, value)

    def vector_at(pointer, index):
        return b.bitcast(b.gep(pointer, [index]), vec.as_pointer())

    def step(s):
        n0 = b.mul(s, const(STEP))

        def row(i, *peak):
            start_row = b.add(b.mul(i, stride), n0)

            def phase(p, *peak):
                acc = _ir_taps(b, fma, x, h, p, start_row, taps, [zero] * REGISTERS)
                out = []
                for j in range(REGISTERS):
                    a = b.call(fabs, [acc[j]])
                    out.append(b.select(b.fcmp_ordered(">", a, peak[j]), a, peak[j]))
                return out

            return ir_loop(b, const(0), phases, list(peak), phase)

        peak = ir_loop(b, const(0), rows, [zero] * REGISTERS, row)
        for j in range(REGISTERS):
            b.store(peak[j], vector_at(y, b.add(n0, const(WIDTH * j))), align=4)
        return []

    ir_loop(b, const(0), steps, [], step)
    b.ret_void()
    return str(module)


@functools.lru_cache(maxsize=1)
def _compiled_peak():
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    return compile_function(_build_peak_ir(), "fir_peak", [p, i64, i64, p, i64, i64, p, i64])


def fir_peak(x: torch.Tensor, h: torch.Tensor, n: int) -> torch.Tensor:
    """``max over rows i, phases p of |sum_k h[p, k] * x[i, j + k]|`` for ``j < n``: (n,) float32, on the CPU.

    ``x``: (rows, L) float32 with contiguous rows, ``L >= readable_length(n, taps)``; ``h``:
    (phases, taps).  Each phase's sum is :func:`fir_into`'s, bit for bit; split over the cores.
    """
    rows, length = x.shape
    h = h.to(torch.float32).contiguous()
    phases, taps = h.shape
    if length < readable_length(n, taps) or x.stride(-1) != 1 or x.dtype != torch.float32:
        raise ValueError("fir_peak: input too short, not contiguous or not float32")
    out = torch.empty(writable_length(n), dtype=torch.float32)
    steps = writable_length(n) // STEP
    pieces = max(1, min(kernel_threads(), steps // 64))
    cuts = [steps * t // pieces for t in range(pieces + 1)]
    jobs = [(x.data_ptr() + 4 * STEP * lo, x.stride(0), rows, h.data_ptr(), taps, phases, out.data_ptr() + 4 * STEP * lo,
             hi - lo) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
    run_jobs(_compiled_peak(), jobs, pieces)
    return out[:n]
