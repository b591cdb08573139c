/* Vectors in GCC/clang vector extensions, and the float math the kernels need.
 *
 * Included by each kernels_<isa>.c after it sets the target, so the same source becomes AVX-512,
 * AVX2 or baseline code (SSE2 on x86-64, NEON on arm64). Everything here is static inline: each
 * instruction set gets its own copy.
 *
 * `vf` holds VL floats, the target's register width (16 on AVX-512, 8 on AVX, 4 otherwise): GCC
 * keeps a vector wider than the target's registers in memory and moves it through general
 * registers on every operation (ten times slower on AVX2), so the hot loops never use one. A
 * 16-row block of packed weights (PACK_ROWS) is NV = 16 / VL such vectors, lane-local, so every
 * output sums the same products in the same order whatever VL is. `v16f` (16 lanes) remains for
 * the few shuffles that need 16 lanes at once (4x4 sparse blocks, the fast draw's chunk sums). */
#ifndef VOCODERS_SIMD_H
#define VOCODERS_SIMD_H

#include <math.h>
#include <stdint.h>

#if defined(__AVX512F__)
#define VL 16
#elif defined(__AVX__)
#define VL 8
#else
#define VL 4
#endif
#define NV (16 / VL) /* vectors per 16-row block */

typedef float vf __attribute__((vector_size(4 * VL)));
typedef int32_t vi __attribute__((vector_size(4 * VL)));
typedef uint32_t vu __attribute__((vector_size(4 * VL)));
typedef double vd __attribute__((vector_size(4 * VL))); /* VL / 2 doubles */
typedef int64_t vl __attribute__((vector_size(4 * VL)));
typedef float vfh __attribute__((vector_size(2 * VL))); /* VL / 2 floats, widened into a vd */
typedef uint16_t vh_mem __attribute__((vector_size(2 * VL), aligned(2)));
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
/* The same vectors at any 4-byte (8 for doubles) boundary: every load and store goes through these. */
typedef float vf_mem __attribute__((vector_size(4 * VL), aligned(4)));
typedef uint32_t vu_mem __attribute__((vector_size(4 * VL), aligned(4)));
typedef double vd_mem __attribute__((vector_size(4 * VL), aligned(8)));
typedef float vfh_mem __attribute__((vector_size(2 * VL), aligned(4)));
typedef float v16f_mem __attribute__((vector_size(64), aligned(4)));
#define VD (VL / 2) /* doubles per vd */

#define INLINE static inline __attribute__((always_inline))

INLINE vf vload(const float *p) { return *(const vf_mem *)p; }
INLINE vu vload_bits(const void *p) { return *(const vu_mem *)p; }
INLINE void vstore(float *p, vf v) { *(vf_mem *)p = v; }
INLINE vf vsplat(float x) { return (vf){0} + x; }
INLINE vf vselect(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
INLINE v16f vload16(const float *p) { return *(const v16f_mem *)p; }
INLINE void vstore16(float *p, v16f v) { *(v16f_mem *)p = v; }
#if defined(__AVX512F__)
#include <immintrin.h>
INLINE vf vmax(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
INLINE vf vmin(vf a, vf b) { return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
/* 1 / x: the 14-bit estimate and one Newton step (relative error about 2^-28, below float32 rounding
 * after the final multiply); the division instruction it replaces is several times slower. */
INLINE vf vreciprocal(vf x) {
    vf r = (vf)_mm512_rcp14_ps((__m512)x);
    return r * (2.0f - x * r);
}
#else
INLINE vf vmax(vf a, vf b) { return vselect(a > b, a, b); }
INLINE vf vmin(vf a, vf b) { return vselect(a < b, a, b); }
INLINE vf vreciprocal(vf x) { return 1.0f / x; }
#endif
INLINE float vsum(vf v) {
    float s = 0.0f;
    for (int i = 0; i < VL; i++) s += v[i];
    return s;
}

/* bfloat16 pairs: each 32-bit lane holds two bf16 values (low half first); a bf16 is the top 16
 * bits of a float32, so shifting or masking gives the two float32 vectors without a shuffle. */
INLINE vf bf16_low(vu lanes) { return (vf)(lanes << 16); }
INLINE vf bf16_high(vu lanes) { return (vf)(lanes & 0xFFFF0000u); }
/* int8 quads: each 32-bit lane holds four int8 values (byte 0 first); arithmetic shifts sign-extend. */
INLINE vf i8_byte(vu lanes, int byte) {
    vi shifted = (vi)(lanes << (24 - 8 * byte));
    return __builtin_convertvector(shifted >> 24, vf);
}

/* e^x for float32 lanes, within about 2 ulp: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor
 * series to degree 7 (truncation below 6e-9 relative), 2^n built in the exponent field. Inputs are
 * clamped to [-87, 88] so 2^n stays a normal float; the callers only need e^x up to that. */
INLINE vf vexp(vf x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723e-06f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = vmin(vmax(x, vsplat(-87.0f)), vsplat(88.0f));
    vf shifted = x * log2e + round_magic;
    vf n = shifted - round_magic;
    vi exponent = ((vi)shifted - (vi)vsplat(round_magic)) + 127;
    vf r = x - n * ln2_hi - n * ln2_lo;
    vf p = vsplat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (vf)(exponent << 23);
}

INLINE vf vsigmoid(vf x) { return vreciprocal(1.0f + vexp(-x)); }
INLINE vf vtanh(vf x) { return 2.0f * vreciprocal(1.0f + vexp(-2.0f * x)) - 1.0f; }

/* e^x for float64 lanes with x <= 0 (the softmax's z - max), within about 1 ulp: x = n ln2 + r,
 * |r| <= ln2 / 2, e^r by its Taylor series to degree 13 (truncation below 5e-18 relative), 2^n in
 * the exponent field. Below -708 the result is 0 where the exact value would be subnormal (< 3e-308):
 * added to a softmax total of at least 1 it changes nothing. */
INLINE vd vexp_nonpositive(vd x) {
    const double log2e = 1.4426950408889634, ln2_hi = 0.6931471803691238, ln2_lo = 1.9082149292705877e-10;
    const double round_magic = 6755399441055744.0; /* 1.5 * 2^52 */
    vl underflow = x < -708.0;
    x = (vd)((vl)x & ~underflow) + (vd)((vl)((vd){0} - 708.0) & underflow);
    vd shifted = x * log2e + round_magic;
    vd n = shifted - round_magic;
    vl exponent = ((vl)shifted - (vl)((vd){0} + round_magic)) + 1023;
    vd r = x - n * ln2_hi - n * ln2_lo;
    static const double inverse_factorial[14] = {
        1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
        1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0};
    vd p = (vd){0} + inverse_factorial[13];
    for (int k = 12; k >= 0; k--) p = p * r + inverse_factorial[k];
    vd result = p * (vd)(exponent << 52);
    return (vd)((vl)result & ~underflow);
}

INLINE float sigmoid1(float x) { return 1.0f / (1.0f + expf(-x)); }
INLINE float tanh1(float x) { return tanhf(x); }

#endif
