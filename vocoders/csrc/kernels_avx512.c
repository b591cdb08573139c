/* AVX-512 build of the kernels (x86-64 CPUs with AVX-512F/BW/VL: Skylake-X and later, Zen 4 and later). */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#ifdef VOCODERS_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
#endif

#include "simd.h"
#include "kern_matvec.h"
#include "kern_wavernn.h"
#include "kern_sparse.h"
#include "kern_wavenet.h"
#include "kern_subscale.h"
#include "kern_cond.h"

const kernel_table kernels_avx512 = {"avx512", read_sum, matvec, wavernn_run, sparse_matvec, sparse_wavernn_run, activation, wavenet_run, subscale_run, cond_net};

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
