"""Compile small LLVM IR functions (built with llvmlite.ir) to machine code, once per process.

The renderer's loops over whole files (:mod:`._ballistics`, :mod:`._biquads`,
:mod:`._fir`) are written as LLVM IR, compiled here for this CPU, and called through
ctypes.  llvmlite is the JIT layer under Numba; using it directly compiles a loop in
10-30 ms, where loading Numba's full CPU target costs a new process about 0.85 s.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

_engines = []  # compiled code lives as long as its execution engine: keep them all


def compile_function(ir_text: str, name: str, argtypes: list):
    """The function ``name`` from ``ir_text``, callable through ctypes (which releases the GIL)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # For this CPU's vector units (AVX2 and FMA here): the code is compiled where it runs.
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=2)
    module = llvm.parse_assembly(ir_text)
    module.verify()
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    _engines.append(engine)
    return ctypes.CFUNCTYPE(None, *argtypes)(engine.get_function_address(name))

def ir_loop(builder, start, stop, carried, body):
    """IR for ``for i in range(start, stop): carried = body(i, *carried)``; returns the final ``carried``."""
    import llvmlite.ir as ir

    before = builder.block
    head, inside, after = (builder.append_basic_block(name) for name in ("head", "body", "after"))
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(start.type)
    i.add_incoming(start, before)
    phis = []
    for value in carried:
        phi = builder.phi(value.type)
        phi.add_incoming(value, before)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, stop), inside, after)
    builder.position_at_end(inside)
    new = body(i, *phis)
    end = builder.block
    i.add_incoming(builder.add(i, ir.Constant(i.type, 1)), end)
    for phi, value in zip(phis, new):
        phi.add_incoming(value, end)
    builder.branch(head)
    builder.position_at_end(after)
    return phis


_POOL_NAME = "dmst-kernels"
_pool: ThreadPoolExecutor | None = None
_kernel_threads: int | None = None


def kernel_threads() -> int:
    """How many threads the render loops split their work over: torch's thread count unless
    :func:`use_cores_for_kernels` set it."""
    import torch

    return _kernel_threads or torch.get_num_threads()


def use_cores_for_kernels(cores: int | None = None) -> None:
    """Run torch's own operations on one thread and the compiled loops (and the sends' FFT blocks) on ``cores``
    threads of :func:`run_jobs`' pool (default: torch's thread count before this call).

    What ``dmst render`` does.  On a CPU shared with other processes, torch's OpenMP threads spin
    at every barrier while a sibling waits for a core (measured on this 2-core machine under load:
    5.8 s of wall time for a 3-minute render, against 3.0 s on one thread); the pool's threads block
    instead, and split the work that matters.
    """
    import torch

    global _kernel_threads
    _kernel_threads = cores or _kernel_threads or torch.get_num_threads()
    torch.set_num_threads(1)


def map_threads(function, items: list, threads: int | None = None) -> list:
    """``[function(item) for item in items]`` on up to ``threads`` (default :func:`kernel_threads`) threads of
    the pool; for work that releases the GIL (compiled loops, large torch operations)."""
    global _pool
    threads = kernel_threads() if threads is None else threads
    # Called from one of the pool's own threads (work split inside work already split): run here, serially;
    # waiting on the pool from inside it could leave every thread waiting.
    if threads <= 1 or len(items) <= 1 or threading.current_thread().name.startswith(_POOL_NAME):
        return [function(item) for item in items]
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix=_POOL_NAME)
    return list(_pool.map(function, items))


def run_jobs(function, jobs: list[tuple], threads: int) -> None:
    """``function(*job)`` for every job, on up to ``threads`` threads at once.

    Compiled functions are called through ctypes, which releases the GIL, so the
    jobs run on separate cores.  One pool serves the whole process.
    """
    map_threads(lambda job: function(*job), jobs, threads)


def compile_render_kernels() -> None:
    """Compile the renderer's loops now rather than on first use (about 0.15 s in all).

    ``dmst render`` calls this on a second thread while it reads files and loads the
    model; LLVM compiles without holding the GIL.
    """
    from . import _ballistics, _biquads, _feedback, _fir

    _biquads._compiled(False)
    _fir._compiled()
    _ballistics._compiled(False)
    _ballistics._compiled_family(False)  # a compressor of another detector family
    _feedback._compiled(False)  # a compressor with some feedback
    _ballistics._compiled_detector()  # the gate and the de-esser
    _fir._compiled_peak()  # the limiter's true peak (and the meter's)
    _ballistics._compiled_lookahead()  # the limiter's gain
