/* Dense kernels: the read-bandwidth probe and packed matrix-vector products (float32, bfloat16
 * pairs, int8 quads; float32 accumulation). Included by kernels_<isa>.c after simd.h. */

static double read_sum(const float *data, size_t count, int reps) {
    v16f acc[8] = {{0}};
    size_t blocks = count / 128;
    for (int r = 0; r < reps; r++) {
        const float *p = data;
        for (size_t b = 0; b < blocks; b++, p += 128)
            for (int k = 0; k < 8; k++) acc[k] += vload(p + 16 * k);
    }
    v16f total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return vsum(total);
}

/* One 16-row block for `streams` <= MAX_PASS_STREAMS streams: out[s] = block . x[s].
 * `streams` and `dtype` are constants at every call site, so each combination compiles to its own
 * loop with the accumulators in registers. Four independent accumulators per stream at one stream
 * (two at two, one beyond) hide the latency of the fused multiply-adds. */
INLINE void matvec_block(int dtype, int streams, const void *block, int cols_padded, const float *const *x,
                         v16f *out) {
    v16f acc[MAX_PASS_STREAMS][4];
    for (int s = 0; s < streams; s++)
        for (int u = 0; u < 4; u++) acc[s][u] = vsplat(0.0f);
    if (dtype == WEIGHT_F32) {
        const float *w = (const float *)block;
        int j = 0;
        for (; j + 4 <= cols_padded; j += 4)
            for (int u = 0; u < 4; u++) {
                v16f column = vload(w + (size_t)(j + u) * PACK_ROWS);
                for (int s = 0; s < streams; s++) acc[s][u] += column * x[s][j + u];
            }
        for (; j < cols_padded; j++) {
            v16f column = vload(w + (size_t)j * PACK_ROWS);
            for (int s = 0; s < streams; s++) acc[s][0] += column * x[s][j];
        }
    } else if (dtype == WEIGHT_BF16) {
        const uint16_t *w = (const uint16_t *)block;
        int j = 0;
        for (; j + 4 <= cols_padded; j += 4) {
            v16u first = vload_bits(w + (size_t)j * PACK_ROWS), second = vload_bits(w + (size_t)(j + 2) * PACK_ROWS);
            v16f c0 = bf16_low(first), c1 = bf16_high(first), c2 = bf16_low(second), c3 = bf16_high(second);
            for (int s = 0; s < streams; s++) {
                acc[s][0] += c0 * x[s][j];
                acc[s][1] += c1 * x[s][j + 1];
                acc[s][2] += c2 * x[s][j + 2];
                acc[s][3] += c3 * x[s][j + 3];
            }
        }
        for (; j < cols_padded; j += 2) {
            v16u lanes = vload_bits(w + (size_t)j * PACK_ROWS);
            for (int s = 0; s < streams; s++) {
                acc[s][0] += bf16_low(lanes) * x[s][j];
                acc[s][1] += bf16_high(lanes) * x[s][j + 1];
            }
        }
    } else {
        const int8_t *w = (const int8_t *)block;
        for (int j = 0; j < cols_padded; j += 4) {
            v16u lanes = vload_bits(w + (size_t)j * PACK_ROWS);
            v16f c0 = i8_byte(lanes, 0), c1 = i8_byte(lanes, 1), c2 = i8_byte(lanes, 2), c3 = i8_byte(lanes, 3);
            for (int s = 0; s < streams; s++) {
                acc[s][0] += c0 * x[s][j];
                acc[s][1] += c1 * x[s][j + 1];
                acc[s][2] += c2 * x[s][j + 2];
                acc[s][3] += c3 * x[s][j + 3];
            }
        }
    }
    for (int s = 0; s < streams; s++) out[s] = (acc[s][0] + acc[s][1]) + (acc[s][2] + acc[s][3]);
}

INLINE void matvec_pass(int dtype, int streams, const packed_matrix *w, const float *const *x, float *const *y) {
    const int cols_padded = padded_cols(w->cols, dtype), blocks = padded_rows(w->rows) / PACK_ROWS;
    const size_t block_bytes = (size_t)cols_padded * PACK_ROWS * (dtype == WEIGHT_F32 ? 4 : dtype == WEIGHT_BF16 ? 2 : 1);
    for (int b = 0; b < blocks; b++) {
        v16f out[MAX_PASS_STREAMS];
        matvec_block(dtype, streams, (const char *)w->data + b * block_bytes, cols_padded, x, out);
        v16f scale = w->scale ? vload(w->scale + b * PACK_ROWS) : vsplat(1.0f);
        v16f bias = w->bias ? vload(w->bias + b * PACK_ROWS) : vsplat(0.0f);
        for (int s = 0; s < streams; s++) vstore(y[s] + b * PACK_ROWS, out[s] * scale + bias);
    }
}

#define MATVEC_CASE(dtype, streams) \
    case (dtype) * 8 + (streams): matvec_pass((dtype), (streams), w, xs, ys); break;
#define MATVEC_CASES(dtype) \
    MATVEC_CASE(dtype, 1) MATVEC_CASE(dtype, 2) MATVEC_CASE(dtype, 3) MATVEC_CASE(dtype, 4)

static void matvec(const packed_matrix *w, const float *const *x, float *const *y, int streams) {
    for (int first = 0; first < streams; first += MAX_PASS_STREAMS) {
        int count = streams - first < MAX_PASS_STREAMS ? streams - first : MAX_PASS_STREAMS;
        const float *const *xs = x + first;
        float *const *ys = y + first;
        switch (w->dtype * 8 + count) {
            MATVEC_CASES(WEIGHT_F32)
            MATVEC_CASES(WEIGHT_BF16)
            MATVEC_CASES(WEIGHT_I8)
        }
    }
}
