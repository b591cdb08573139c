/* Block-sparse kernels (Sparse WaveRNN): block-sparse matrix-vector products, a fast inverse-CDF
 * draw, and the batch-1 WaveRNN sampling loop over block-sparse matrices. Included by
 * kernels_<isa>.c after simd.h, kern_matvec.h and kern_wavernn.h (it reuses gru_rows and draw_class).
 *
 * Layout (see sparse_matrix in kernels.h): output rows in groups of block_rows; each group a run of
 * blocks, block b covering block_cols columns from block_col[b], its values column by column
 * (values[b][block_cols][block_rows]). A 16x1 block is 16 lanes (NV vectors) and needs one activation,
 * as the WaveRNN paper says; a 4x4 block is 16 lanes too, its four activations spread by a shuffle.
 * A dense matrix (dense = 1) is stored column-major and multiplied over its non-zero inputs only,
 * which skips the columns a ReLU zeroed; DENSE_CHUNK vectors of outputs at a time stay in registers. */

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* VL half-precision values -> float32 lanes. float16 by bit manipulation where the target has no
 * conversion instruction: exponent and mantissa moved to float32 places, then scaled by 2^112 to
 * rebias (exact for normal and subnormal values; weights are never infinite). bfloat16 is the top
 * half of a float32. */
INLINE vf f16_load(const uint16_t *p) {
#if defined(__AVX512F__)
    return (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#else
    vu bits = __builtin_convertvector(*(const vh_mem *)p, vu);
    vf magnitude = (vf)((bits & 0x7FFFu) << 13) * 0x1p112f;
    return (vf)((vu)magnitude | ((bits & 0x8000u) << 16));
#endif
}

INLINE vf bf16_load(const uint16_t *p) {
#if defined(__AVX512F__)
    return (vf)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
#else
    return (vf)(__builtin_convertvector(*(const vh_mem *)p, vu) << 16);
#endif
}

INLINE float f16_scalar(uint16_t bits) {
    union {
        uint32_t u;
        float f;
    } value = {(uint32_t)(bits & 0x7FFFu) << 13};
    value.f *= 0x1p112f;
    value.u |= (uint32_t)(bits & 0x8000u) << 16;
    return value.f;
}

INLINE float stored_scalar(const void *values, int dtype, size_t i) {
    if (dtype == WEIGHT_F32) return ((const float *)values)[i];
    uint16_t bits = ((const uint16_t *)values)[i];
    if (dtype == WEIGHT_F16) return f16_scalar(bits);
    union {
        uint32_t u;
        float f;
    } value = {(uint32_t)bits << 16};
    return value.f;
}

/* Values [VL index, VL index + VL) as float32. `dtype` is a constant at every call site. */
INLINE vf block_values(const void *values, int dtype, size_t index) {
    if (dtype == WEIGHT_F16) return f16_load((const uint16_t *)values + VL * index);
    if (dtype == WEIGHT_BF16) return bf16_load((const uint16_t *)values + VL * index);
    return vload((const float *)values + VL * index);
}

/* y[16 g .. 16 g + 16) for every group of a 16x1 matrix; four independent accumulators. The blocks
 * are walked by pointer with constant offsets: index arithmetic per block would cost as many
 * instructions as the multiply-add itself, and this loop is bound by instructions, not bytes. */
INLINE void spmv_16x1(const sparse_matrix *m, int dtype, const float *x, float *y) {
    const int groups = padded_rows(m->rows) / 16;
    const size_t value_bytes = dtype == WEIGHT_F32 ? 4 : 2;
    const char *values = (const char *)m->values + 16 * value_bytes * (size_t)m->group_start[0];
    const int32_t *col = m->block_col + m->group_start[0];
    for (int g = 0; g < groups; g++) {
        const int32_t *const end = m->block_col + m->group_start[g + 1];
        vf a0[NV], a1[NV], a2[NV], a3[NV];
        for (int h = 0; h < NV; h++) {
            a0[h] = m->bias ? vload(m->bias + 16 * g + VL * h) : vsplat(0.0f);
            a1[h] = a2[h] = a3[h] = vsplat(0.0f);
        }
        for (; col + 4 <= end; col += 4, values += 64 * value_bytes) {
            const float x0 = x[col[0]], x1 = x[col[1]], x2 = x[col[2]], x3 = x[col[3]];
            for (int h = 0; h < NV; h++) {
                a0[h] += block_values(values, dtype, h) * x0;
                a1[h] += block_values(values, dtype, NV + h) * x1;
                a2[h] += block_values(values, dtype, 2 * NV + h) * x2;
                a3[h] += block_values(values, dtype, 3 * NV + h) * x3;
            }
        }
        for (; col < end; col++, values += 16 * value_bytes) {
            const float x0 = x[col[0]];
            for (int h = 0; h < NV; h++) a0[h] += block_values(values, dtype, h) * x0;
        }
        for (int h = 0; h < NV; h++) vstore(y + 16 * g + VL * h, (a0[h] + a1[h]) + (a2[h] + a3[h]));
    }
}

#if VL == 16
/* x[0..4) spread over 16 lanes as [x0 x0 x0 x0 x1 x1 x1 x1 ...]: the activations of a 4x4 block. */
INLINE v16f spread4(const float *x) { /* VL 16: AVX-512 */
    const __m512i index = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    return (v16f)_mm512_permutexvar_ps(index, _mm512_castps128_ps512(_mm_loadu_ps(x)));
}

/* One 4x4 group (4 rows): lanes 4c..4c+3 of a block hold column c's four rows, so the block's four
 * activations are spread to [x0 x0 x0 x0 x1 ...]; the result keeps the four columns' partial sums. */
INLINE v16f group_4x4(const sparse_matrix *m, int dtype, const float *x, int g) {
    const size_t value_bytes = dtype == WEIGHT_F32 ? 4 : 2;
    const char *values = (const char *)m->values + 16 * value_bytes * (size_t)m->group_start[g];
    const int32_t *col = m->block_col + m->group_start[g], *const end = m->block_col + m->group_start[g + 1];
    v16f a0 = {0}, a1 = a0;
    for (; col + 2 <= end; col += 2, values += 32 * value_bytes) {
        a0 += block_values(values, dtype, 0) * spread4(x + col[0]);
        a1 += block_values(values, dtype, 1) * spread4(x + col[1]);
    }
    if (col < end) a0 += block_values(values, dtype, 0) * spread4(x + col[0]);
    return a0 + a1;
}

/* 4x4 blocks, four groups (16 rows) at a time: their partial sums fold into one vector of 16 outputs
 * with four shuffles. */
INLINE void spmv_4x4(const sparse_matrix *m, int dtype, const float *x, float *y) {
    const int quads = padded_rows(m->rows) / 16;
    const v16i low8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const v16i high8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const v16i low4 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const v16i high4 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    for (int q = 0; q < quads; q++) {
        v16f a0 = group_4x4(m, dtype, x, 4 * q), a1 = group_4x4(m, dtype, x, 4 * q + 1);
        v16f a2 = group_4x4(m, dtype, x, 4 * q + 2), a3 = group_4x4(m, dtype, x, 4 * q + 3);
        v16f s01 = __builtin_shuffle(a0, a1, low8) + __builtin_shuffle(a0, a1, high8); /* 2 columns each */
        v16f s23 = __builtin_shuffle(a2, a3, low8) + __builtin_shuffle(a2, a3, high8);
        v16f out = __builtin_shuffle(s01, s23, low4) + __builtin_shuffle(s01, s23, high4); /* 4 rows each */
        if (m->bias) out += vload16(m->bias + 16 * q);
        vstore16(y + 16 * q, out);
    }
}
#else
/* Narrower registers: a 4x4 block is NV vectors, vector h holding columns VL h / 4 .. as above. */
INLINE vf spread4_part(const float *x, int h) {
#if VL == 8
    return (vf){x[2 * h], x[2 * h], x[2 * h], x[2 * h], x[2 * h + 1], x[2 * h + 1], x[2 * h + 1], x[2 * h + 1]};
#else
    return vsplat(x[h]);
#endif
}

/* One 4x4 group's four outputs, its columns' partial sums folded in the order of the 16-lane
 * shuffles: (c0 + c2) + (c1 + c3). */
INLINE void group_4x4_rows(const sparse_matrix *m, int dtype, const float *x, int g, float *out) {
    const size_t value_bytes = dtype == WEIGHT_F32 ? 4 : 2;
    const char *values = (const char *)m->values + 16 * value_bytes * (size_t)m->group_start[g];
    const int32_t *col = m->block_col + m->group_start[g], *const end = m->block_col + m->group_start[g + 1];
    vf a0[NV], a1[NV];
    for (int h = 0; h < NV; h++) a0[h] = a1[h] = vsplat(0.0f);
    for (; col + 2 <= end; col += 2, values += 32 * value_bytes)
        for (int h = 0; h < NV; h++) {
            a0[h] += block_values(values, dtype, h) * spread4_part(x + col[0], h);
            a1[h] += block_values(values, dtype, NV + h) * spread4_part(x + col[1], h);
        }
    if (col < end)
        for (int h = 0; h < NV; h++) a0[h] += block_values(values, dtype, h) * spread4_part(x + col[0], h);
    vf a[NV];
    for (int h = 0; h < NV; h++) a[h] = a0[h] + a1[h];
#if VL == 8
    const vf t = a[0] + a[1]; /* lanes 0-3: c0 + c2, 4-7: c1 + c3 */
    for (int r = 0; r < 4; r++) out[r] = t[r] + t[4 + r];
#else
    const vf t = (a[0] + a[2]) + (a[1] + a[3]);
    for (int r = 0; r < 4; r++) out[r] = t[r];
#endif
}

INLINE void spmv_4x4(const sparse_matrix *m, int dtype, const float *x, float *y) {
    const int groups = padded_rows(m->rows) / 4;
    for (int g = 0; g < groups; g++) {
        group_4x4_rows(m, dtype, x, g, y + 4 * g);
        if (m->bias)
            for (int r = 0; r < 4; r++) y[4 * g + r] += m->bias[4 * g + r];
    }
}
#endif

/* Any other block shape, one value at a time (correct everywhere, fast nowhere). */
static void spmv_generic(const sparse_matrix *m, int dtype, const float *x, float *y) {
    const int br = m->block_rows, bc = m->block_cols, groups = padded_rows(m->rows) / br;
    for (int g = 0; g < groups; g++) {
        for (int r = 0; r < br; r++) y[g * br + r] = m->bias ? m->bias[g * br + r] : 0.0f;
        for (int b = m->group_start[g]; b < m->group_start[g + 1]; b++)
            for (int c = 0; c < bc; c++) {
                const float xv = x[m->block_col[b] + c];
                for (int r = 0; r < br; r++) {
                    size_t i = ((size_t)b * bc + c) * br + r;
                    y[g * br + r] += stored_scalar(m->values, dtype, i) * xv;
                }
            }
    }
}

/* Accumulators of a chunk: all but a few of the registers (32 on AVX-512, 16 otherwise). */
#if VL == 16
#define DENSE_CHUNK 16
#else
#define DENSE_CHUNK 12
#endif

/* Rows [first, first + VL n) of a dense column-major matrix over the active inputs: each active
 * column is a contiguous run of VL n values, accumulated into n vectors kept in registers. */
INLINE void dense_active_chunk(const sparse_matrix *m, int dtype, const float *x, float *y, const int32_t *active,
                               int count, int first, int n) {
    const size_t stride = (size_t)padded_rows(m->rows) / VL; /* vectors per column */
    vf acc[DENSE_CHUNK];
    for (int i = 0; i < n; i++) acc[i] = m->bias ? vload(m->bias + first + VL * i) : vsplat(0.0f);
    for (int k = 0; k < count; k++) {
        const int j = active[k];
        const float xj = x[j];
        const size_t base = (size_t)j * stride + first / VL;
        for (int i = 0; i < n; i++) acc[i] += block_values(m->values, dtype, base + i) * xj;
    }
    for (int i = 0; i < n; i++) vstore(y + first + VL * i, acc[i]);
}

#define CHUNK_CASE(n) \
    case n: dense_active_chunk(m, dtype, x, y, active, count, first, n); break;

/* The indices of x's non-zero (or NaN) entries, in order; returns their number. `active` has room
 * for `count` values. AVX-512 compresses 16 indices at a time in a register (the memory form of
 * the compress is slow on some cores) and stores all 16 lanes: the lanes past the count are
 * overwritten by the next store or lie below index `count` + 16 <= `count` of the next chunk. */
INLINE int active_columns(const float *x, int count, int32_t *active) {
    int found = 0, j = 0;
#if defined(__AVX512F__)
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= count; j += 16) {
        const __mmask16 nonzero = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + j), _mm512_setzero_ps(), _CMP_NEQ_UQ);
        _mm512_storeu_si512((void *)(active + found), _mm512_maskz_compress_epi32(nonzero, index));
        found += __builtin_popcount((unsigned)nonzero);
        index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
    }
#endif
    for (; j < count; j++) {
        active[found] = j;
        found += x[j] != 0.0f;
    }
    return found;
}

/* A dense matrix (values column-major, [cols][rows padded]) over the non-zero entries of x only. */
INLINE int dense_active(const sparse_matrix *m, int dtype, const float *x, float *y, int32_t *active) {
    const int count = active_columns(x, m->cols, active);
    const int rows = padded_rows(m->rows);
    for (int first = 0; first < rows; first += DENSE_CHUNK * VL) {
        switch ((rows - first) / VL < DENSE_CHUNK ? (rows - first) / VL : DENSE_CHUNK) {
            CHUNK_CASE(1) CHUNK_CASE(2) CHUNK_CASE(3) CHUNK_CASE(4) CHUNK_CASE(5) CHUNK_CASE(6) CHUNK_CASE(7)
            CHUNK_CASE(8) CHUNK_CASE(9) CHUNK_CASE(10) CHUNK_CASE(11) CHUNK_CASE(12)
#if VL == 16
            CHUNK_CASE(13) CHUNK_CASE(14) CHUNK_CASE(15) CHUNK_CASE(16)
#endif
        }
    }
    return count;
}

#define BY_DTYPE(call_f32, call_bf16, call_f16) \
    (m->dtype == WEIGHT_F16 ? (call_f16) : m->dtype == WEIGHT_BF16 ? (call_bf16) : (call_f32))

/* y = W x (+ bias) for a block-sparse matrix; y has W's padded rows, x W's columns. `active` is
 * scratch for W's cols int32 values. Returns the inputs read: the non-zero ones for a dense matrix,
 * else all columns. */
static int sparse_matvec(const sparse_matrix *m, const float *x, float *y, int32_t *active) {
    if (m->block_rows == 16 && m->block_cols == 1 && m->dense)
        return BY_DTYPE(dense_active(m, WEIGHT_F32, x, y, active), dense_active(m, WEIGHT_BF16, x, y, active),
                        dense_active(m, WEIGHT_F16, x, y, active));
    if (m->block_rows == 16 && m->block_cols == 1)
        BY_DTYPE(spmv_16x1(m, WEIGHT_F32, x, y), spmv_16x1(m, WEIGHT_BF16, x, y), spmv_16x1(m, WEIGHT_F16, x, y));
    else if (m->block_rows == 4 && m->block_cols == 4)
        BY_DTYPE(spmv_4x4(m, WEIGHT_F32, x, y), spmv_4x4(m, WEIGHT_BF16, x, y), spmv_4x4(m, WEIGHT_F16, x, y));
    else
        spmv_generic(m, m->dtype, x, y);
    return m->cols;
}

/* The loops' activations over an array, for the tests that bound their error. */
static void activation(int kind, const float *x, float *out, size_t count) {
    size_t i = 0;
    for (; i + VL <= count; i += VL) {
        vf v = vload(x + i);
        vstore(out + i, kind == 0 ? vsigmoid(v) : kind == 1 ? vtanh(v) : vexp(v));
    }
    for (; i < count; i++) out[i] = kind == 0 ? sigmoid1(x[i]) : kind == 1 ? tanh1(x[i]) : expf(x[i]);
}

/* Inverse-CDF draw as draw_class, vectorised: float32 e^x (simd.h's vexp, about 2 ulp), sums of 16
 * classes, their running total in float64, then a walk through the chosen 16. The cumulative sums
 * differ from the float64 reference by about 1e-6 relative, so a draw differs only when the uniform
 * number falls that close to a class boundary. Classes must be a multiple of 16 (else draw_class). */
/* Sums of 16 vectors at once: lane i of the result is the sum of v[i]'s lanes (a tree of shuffles
 * in place of 16 serial horizontal sums). */
INLINE v16f vsum16(const v16f *v) {
    const v16i hi8[2] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                         {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};
    const v16i hi4[2] = {{0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
                         {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31}};
    const v16i hi2[2] = {{0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                         {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31}};
    const v16i hi1[2] = {{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
                         {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};
    v16f a[8], b[4], c[2];
    for (int i = 0; i < 8; i++)
        a[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], hi8[0]) + __builtin_shuffle(v[2 * i], v[2 * i + 1], hi8[1]);
    for (int i = 0; i < 4; i++)
        b[i] = __builtin_shuffle(a[2 * i], a[2 * i + 1], hi4[0]) + __builtin_shuffle(a[2 * i], a[2 * i + 1], hi4[1]);
    for (int i = 0; i < 2; i++)
        c[i] = __builtin_shuffle(b[2 * i], b[2 * i + 1], hi2[0]) + __builtin_shuffle(b[2 * i], b[2 * i + 1], hi2[1]);
    return __builtin_shuffle(c[0], c[1], hi1[0]) + __builtin_shuffle(c[0], c[1], hi1[1]);
}

static int draw_class_fast(const float *logits, int classes, float uniform, double temperature, float *weights) {
    const int chunks = classes / 16;
    vf top = vload(logits);
    for (int k = VL; k < classes; k += VL) top = vmax(top, vload(logits + k));
    float m = top[0];
    for (int i = 1; i < VL; i++) m = top[i] > m ? top[i] : m;
    const float inv_t = (float)(1.0 / temperature);
    for (int k = 0; k < classes; k += VL) vstore(weights + k, vexp((vload(logits + k) - m) * inv_t));
    v16f e[16];
    for (int c = 0; c < 16; c++) e[c] = c < chunks ? vload16(weights + 16 * c) : (v16f){0};
    const v16f sums = vsum16(e); /* lane c: the sum of chunk c */
    double total = 0.0;
    for (int c = 0; c < chunks; c++) total += sums[c];
    const double threshold = (double)uniform * total;
    double running = 0.0;
    int c = 0;
    while (c < chunks - 1 && running + sums[c] <= threshold) running += sums[c++];
    for (int k = 16 * c; k < classes; k++) {
        running += weights[k];
        if (running > threshold) return k;
    }
    return classes - 1;
}

/* The fast draw where it applies (temperature > 0, a multiple of 16 classes up to 256), else the
 * float64 reference draw. */
INLINE int draw_sample(const float *logits, int classes, float uniform, double temperature, float *weights,
                       double *cdf) {
    if (temperature > 0.0 && classes % 16 == 0 && classes <= 256)
        return draw_class_fast(logits, classes, uniform, temperature, weights);
    return draw_class(logits, classes, uniform, temperature, cdf);
}

/* The dual-softmax WaveRNN loop of kern_wavernn.h over block-sparse matrices, one stream at a time
 * (a sparse product gains nothing from sharing its reads between streams the way a dense one does).
 * gru_rows is shared with the dense loop, so the gate arithmetic is the same code. inputs_read[0]
 * and [1] accumulate the inputs O2 and O4 read (fewer than their columns when packed dense). */
static int sparse_wavernn_run(const sparse_wavernn_weights *sw, const wavernn_job *job, int64_t *inputs_read) {
    const wavernn_weights *w = &sw->base;
    const int T = job->steps, H = w->hidden, half = w->half, H3 = 3 * H;
    const int Kc = w->coarse_classes, Kf = w->fine_classes, fine_bits = w->fine_bits, width = job->logits_width;
    const float coarse_step = (float)(2.0 / (Kc - 1)), fine_step = (float)(2.0 / (Kf - 1));
    const size_t n_h = (size_t)padded_rows(H) + PACK_ROWS, n_gh = padded_rows(H3);
    const size_t n_o = padded_rows(w->out_hidden) + PACK_ROWS, n_c = padded_rows(Kc), n_f = padded_rows(Kf);
    const size_t n_k = n_c > n_f ? n_c : n_f;
    float *arena = (float *)calloc(2 * n_h + n_gh + n_o + n_c + n_f + n_k, sizeof(float));
    int32_t *active = (int32_t *)calloc(n_h + n_o, sizeof(int32_t));
    double *cdf = (double *)calloc(n_k, sizeof(double));
    if (!arena || !active || !cdf) {
        free(arena), free(active), free(cdf);
        return -1;
    }
    float *h = arena, *h_new = h + n_h, *gh = h_new + n_h, *o = gh + n_gh, *lc = o + n_o, *lf = lc + n_c;
    float *scratch = lf + n_f;
    const int64_t silence = (int64_t)Kc * Kf / 2;
    for (int s = 0; s < job->streams; s++) {
        memset(h, 0, 2 * n_h * sizeof(float));
        int64_t previous = silence;
        if (job->hidden) { /* carry the state of an earlier call (streaming) */
            memcpy(h, job->hidden + (size_t)s * H, (size_t)H * sizeof(float));
            previous = job->previous[s];
        }
        for (int t = 0; t < T; t++) {
            const size_t at = (size_t)s * T + t;
            const int frame = t / w->hop;
            const float *up = w->upsample + (size_t)(t % w->hop) * w->taps;
            const float *cond = job->cond + ((size_t)s * job->cond_frames + frame) * H3;
            const float c_prev = (float)(previous >> fine_bits) * coarse_step - 1.0f;
            const float f_prev = (float)(previous & (Kf - 1)) * fine_step - 1.0f;
            sparse_matvec(&sw->R, h, gh, active);
            gru_rows(w, cond, up, c_prev, f_prev, 0.0f, gh, h, h_new, 0, half);
            sparse_matvec(&sw->O1, h_new, o, active);
            relu(o, (int)(n_o - PACK_ROWS));
            inputs_read[0] += sparse_matvec(&sw->O2, o, lc, active);
            const int64_t coarse = job->forced ? job->forced[at] >> fine_bits
                                               : draw_sample(lc, Kc, job->noise[2 * at], job->temperature, scratch, cdf);
            const float c_now = (float)coarse * coarse_step - 1.0f;
            gru_rows(w, cond, up, c_prev, f_prev, c_now, gh, h, h_new, half, H);
            sparse_matvec(&sw->O3, h_new + half, o, active);
            relu(o, (int)(n_o - PACK_ROWS));
            inputs_read[1] += sparse_matvec(&sw->O4, o, lf, active);
            const int64_t fine = job->forced ? job->forced[at] & (Kf - 1)
                                             : draw_sample(lf, Kf, job->noise[2 * at + 1], job->temperature, scratch, cdf);
            if (job->logits) {
                memcpy(job->logits + 2 * at * width, lc, (size_t)Kc * sizeof(float));
                memcpy(job->logits + (2 * at + 1) * width, lf, (size_t)Kf * sizeof(float));
            }
            previous = (coarse << fine_bits) | fine;
            job->samples[at] = previous;
            float *swap = h;
            h = h_new, h_new = swap;
        }
        if (job->hidden) {
            memcpy(job->hidden + (size_t)s * H, h, (size_t)H * sizeof(float));
            job->previous[s] = previous;
        }
    }
    free(arena), free(active), free(cdf);
    return 0;
}
