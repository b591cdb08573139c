"""CPU engines: the sampling loops in C (`vocoders._native`), with numba fallbacks for WaveNet
(and a numba loop for LPCNet).

engine.py: `CpuEngine` (WaveRNN and Subscale WaveRNN, dense weights; WaveNet through wavenet.py,
LPCNet through lpcnet.py, a numba loop);
sparse.py: `SparseCpuEngine` (block-sparse R and O1..O4); subscale.py: the Subscale loop's context
network; packing.py / sparse_packing.py: weights laid out as the C loops read them.
"""

from .engine import CpuEngine
from .sparse import SparseCpuEngine

__all__ = ["CpuEngine", "SparseCpuEngine"]
