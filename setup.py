"""Builds the optional C extension vocoders._native; everything else is declared in pyproject.toml.

The extension is compiled when a C compiler is present (GCC or clang) and skipped with a warning
otherwise: the package then installs without it and `engine=auto` falls back to the reference
engine. The kernels choose AVX-512, AVX2 or portable code at run time, so one build runs anywhere.
"""

import sys

from setuptools import Extension, setup

SOURCES = ["module.c", "kernels_portable.c", "kernels_avx2.c", "kernels_avx512.c"]
HEADERS = [
    "kernels.h", "simd.h", "kern_matvec.h", "kern_wavernn.h", "kern_sparse.h", "kern_wavenet.h", "kern_subscale.h",
    "kern_cond.h",
]  # fmt: skip

# No -march: the CPU is chosen at run time. No -ffast-math: the float64 sampling must round as the
# reference does. -O3 lets the vector extensions unroll.
compile_args = [] if sys.platform == "win32" else ["-O3", "-std=gnu11", "-Wno-psabi"]

native = Extension(
    "vocoders._native",
    sources=[f"vocoders/csrc/{name}" for name in SOURCES],
    depends=[f"vocoders/csrc/{name}" for name in HEADERS],
    extra_compile_args=compile_args,
    libraries=[] if sys.platform == "win32" else ["m"],
    optional=True,
)

setup(ext_modules=[native])
