"""How a dmst process uses the CPU and memory: one policy for ``dmst render``, ``dmst serve``'s workers and training."""
from __future__ import annotations


def use_threads_for_rendering(torch_threads: int | None = None) -> None:
    """torch's own operations on ``torch_threads`` threads (default one), the compiled render loops and the sends'
    FFT blocks on the cores: :func:`dmst.effects._llvm.use_cores_for_kernels`, whose pool's threads split the
    work that matters (as many as torch had threads before the first call, or the ``cores`` set there).

    Why: on a CPU shared with other jobs, torch's OpenMP threads spin at every barrier while a sibling waits
    for a core (measured on a 2-core machine under load: 5.8 s of wall time for a 3-minute ``dmst render``
    against 3.0 s on one thread); the pool's threads block instead.  A service rendering two files at once
    on two render threads is that shared CPU all the time.
    """
    import torch

    from .effects._llvm import use_cores_for_kernels

    use_cores_for_kernels()
    if torch_threads:
        torch.set_num_threads(torch_threads)


def reuse_freed_memory() -> None:
    """Ask glibc's allocator to keep freed blocks for reuse (``mallopt``) instead of handing each
    tensor of a long file back to the system and faulting fresh zeroed pages in for the next.
    Measured on the 2-core machine, idle: about 0.5 s of system time less for a 3-minute render with the
    sends on, and a training epoch of 200 mono 5 s crops in 55 s instead of 65 s.  For one-shot and batch
    processes (``dmst render``, ``train.py``), not a long-running service.  A no-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # the largest glibc takes: a mono 3-minute float32 tensor fits under it
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    mallopt(M_TOP_PAD, 64 << 20)
