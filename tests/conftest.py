"""Test-session settings.

One torch thread: the DSP tests run many small operations, which are slower with two
threads on a 2-core machine that is also doing other work, and results do not depend on it.
"""
import torch

torch.set_num_threads(1)
