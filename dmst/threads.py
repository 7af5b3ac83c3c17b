"""How a process that renders uses the CPU: one policy for ``dmst render`` and ``dmst serve``'s workers."""
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
