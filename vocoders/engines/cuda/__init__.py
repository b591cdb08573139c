"""CUDA engines: each chunk of autoregressive steps in a CUDA graph or a Triton kernel, no host sync per sample.

engine.py: `CudaEngine` (WaveRNN, WaveNet, Subscale); sparse.py: `SparseCudaEngine` (16x1 ELL products);
wavernn.py / wavenet.py / subscale.py: the graph steppers per model; triton_*.py: the kernels (optional:
Triton is imported only when a kernel is asked for).
"""

from .engine import CudaEngine
from .sparse import SparseCudaEngine

__all__ = ["CudaEngine", "SparseCudaEngine"]
