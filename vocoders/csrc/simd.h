/* 16-lane vectors in GCC/clang vector extensions, and the float math the kernels need.
 *
 * Included by each kernels_<isa>.c after it sets the target, so the same source becomes AVX-512,
 * AVX2 (two 8-lane halves) or baseline code (SSE2 on x86-64, NEON on arm64). Everything here is
 * static inline: each instruction set gets its own copy. */
#ifndef VOCODERS_SIMD_H
#define VOCODERS_SIMD_H

#include <math.h>
#include <stdint.h>

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));
typedef int64_t v8l __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
/* The same vectors at any 4-byte boundary: every load and store goes through these. */
typedef float v16f_mem __attribute__((vector_size(64), aligned(4)));
typedef uint32_t v16u_mem __attribute__((vector_size(64), aligned(4)));
typedef double v8d_mem __attribute__((vector_size(64), aligned(8)));
typedef float v8f_mem __attribute__((vector_size(32), aligned(4)));

#define INLINE static inline __attribute__((always_inline))

INLINE v16f vload(const float *p) { return *(const v16f_mem *)p; }
INLINE v16u vload_bits(const void *p) { return *(const v16u_mem *)p; }
INLINE void vstore(float *p, v16f v) { *(v16f_mem *)p = v; }
INLINE v16f vsplat(float x) { return (v16f){0} + x; }
INLINE v16f vselect(v16i mask, v16f a, v16f b) { return (v16f)((mask & (v16i)a) | (~mask & (v16i)b)); }
#if defined(__AVX512F__)
#include <immintrin.h>
INLINE v16f vmax(v16f a, v16f b) { return (v16f)_mm512_max_ps((__m512)a, (__m512)b); }
INLINE v16f vmin(v16f a, v16f b) { return (v16f)_mm512_min_ps((__m512)a, (__m512)b); }
/* 1 / x: the 14-bit estimate and one Newton step (relative error about 2^-28, below float32 rounding
 * after the final multiply); the division instruction it replaces is several times slower. */
INLINE v16f vreciprocal(v16f x) {
    v16f r = (v16f)_mm512_rcp14_ps((__m512)x);
    return r * (2.0f - x * r);
}
#else
INLINE v16f vmax(v16f a, v16f b) { return vselect(a > b, a, b); }
INLINE v16f vmin(v16f a, v16f b) { return vselect(a < b, a, b); }
INLINE v16f vreciprocal(v16f x) { return 1.0f / x; }
#endif
INLINE float vsum(v16f v) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

/* bfloat16 pairs: each 32-bit lane holds two bf16 values (low half first); a bf16 is the top 16
 * bits of a float32, so shifting or masking gives the two float32 vectors without a shuffle. */
INLINE v16f bf16_low(v16u lanes) { return (v16f)(lanes << 16); }
INLINE v16f bf16_high(v16u lanes) { return (v16f)(lanes & 0xFFFF0000u); }
/* int8 quads: each 32-bit lane holds four int8 values (byte 0 first); arithmetic shifts sign-extend. */
INLINE v16f i8_byte(v16u lanes, int byte) {
    v16i shifted = (v16i)(lanes << (24 - 8 * byte));
    return __builtin_convertvector(shifted >> 24, v16f);
}

/* e^x for float32 lanes, within about 2 ulp: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor
 * series to degree 7 (truncation below 6e-9 relative), 2^n built in the exponent field. Inputs are
 * clamped to [-87, 88] so 2^n stays a normal float; the callers only need e^x up to that. */
INLINE v16f vexp(v16f x) {
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723e-06f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = vmin(vmax(x, vsplat(-87.0f)), vsplat(88.0f));
    v16f shifted = x * log2e + round_magic;
    v16f n = shifted - round_magic;
    v16i exponent = ((v16i)shifted - (v16i)vsplat(round_magic)) + 127;
    v16f r = x - n * ln2_hi - n * ln2_lo;
    v16f p = vsplat(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (v16f)(exponent << 23);
}

INLINE v16f vsigmoid(v16f x) { return vreciprocal(1.0f + vexp(-x)); }
INLINE v16f vtanh(v16f x) { return 2.0f * vreciprocal(1.0f + vexp(-2.0f * x)) - 1.0f; }

/* e^x for float64 lanes with x <= 0 (the softmax's z - max), within about 1 ulp: x = n ln2 + r,
 * |r| <= ln2 / 2, e^r by its Taylor series to degree 13 (truncation below 5e-18 relative), 2^n in
 * the exponent field. Below -708 the result is 0 where the exact value would be subnormal (< 3e-308):
 * added to a softmax total of at least 1 it changes nothing. */
INLINE v8d vexp_nonpositive(v8d x) {
    const double log2e = 1.4426950408889634, ln2_hi = 0.6931471803691238, ln2_lo = 1.9082149292705877e-10;
    const double round_magic = 6755399441055744.0; /* 1.5 * 2^52 */
    v8l underflow = x < -708.0;
    x = (v8d)((v8l)x & ~underflow) + (v8d)((v8l)((v8d){0} - 708.0) & underflow);
    v8d shifted = x * log2e + round_magic;
    v8d n = shifted - round_magic;
    v8l exponent = ((v8l)shifted - (v8l)((v8d){0} + round_magic)) + 1023;
    v8d r = x - n * ln2_hi - n * ln2_lo;
    static const double inverse_factorial[14] = {
        1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
        1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0};
    v8d p = (v8d){0} + inverse_factorial[13];
    for (int k = 12; k >= 0; k--) p = p * r + inverse_factorial[k];
    v8d result = p * (v8d)(exponent << 52);
    return (v8d)((v8l)result & ~underflow);
}

INLINE float sigmoid1(float x) { return 1.0f / (1.0f + expf(-x)); }
INLINE float tanh1(float x) { return tanhf(x); }

#endif
