/* Baseline build of the kernels (any CPU the compiler targets by default: SSE2 on x86-64, NEON on arm64). */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "simd.h"
#include "kern_matvec.h"
#include "kern_wavernn.h"
#include "kern_sparse.h"
#include "kern_wavenet.h"
#include "kern_subscale.h"
#include "kern_cond.h"

const kernel_table kernels_portable = {"portable", read_sum, matvec, wavernn_run, sparse_matvec, sparse_wavernn_run, activation, wavenet_run, subscale_run, cond_net};
