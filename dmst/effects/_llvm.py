"""Compile small LLVM IR functions (built with llvmlite.ir) to machine code, once per process.

The renderer's loops over whole files (:mod:`._ballistics`, :mod:`._biquads`,
:mod:`._fir`) are written as LLVM IR, compiled here for this CPU, and called through
ctypes.  llvmlite is the JIT layer under Numba; using it directly compiles a loop in
10-30 ms, where loading Numba's full CPU target costs a new process about 0.85 s.
"""
from __future__ import annotations

import ctypes
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


_pool: ThreadPoolExecutor | None = None


def run_jobs(function, jobs: list[tuple], threads: int) -> None:
    """``function(*job)`` for every job, on up to ``threads`` threads at once.

    Compiled functions are called through ctypes, which releases the GIL, so the
    jobs run on separate cores.  One pool serves the whole process.
    """
    global _pool
    if threads <= 1 or len(jobs) <= 1:
        for job in jobs:
            function(*job)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="dmst-kernels")
    list(_pool.map(lambda job: function(*job), jobs))


def compile_render_kernels() -> None:
    """Compile the renderer's loops now rather than on first use (about 0.1 s in all).

    ``dmst render`` calls this on a second thread while it reads files and loads the
    model; LLVM compiles without holding the GIL.
    """
    from . import _ballistics, _biquads, _feedback, _fir

    _biquads._compiled(False)
    _fir._compiled()
    _ballistics._compiled(False)
    _ballistics._compiled_family(False)  # a compressor of another detector family
    _feedback._compiled(False)  # a compressor with some feedback
