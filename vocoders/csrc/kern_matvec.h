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

/* Four weight columns (c0..c3, one 16-row block each) times the next four inputs of every stream,
 * into that stream's four accumulators; each stream's input pointer advances by four. */
INLINE void quad_accumulate(int streams, v16f c0, v16f c1, v16f c2, v16f c3, const float **xs,
                            v16f acc[][4]) {
    for (int s = 0; s < streams; s++) {
        const float *xq = xs[s];
        acc[s][0] += c0 * xq[0];
        acc[s][1] += c1 * xq[1];
        acc[s][2] += c2 * xq[2];
        acc[s][3] += c3 * xq[3];
        xs[s] = xq + 4;
    }
}

/* One 16-row block for `streams` <= MAX_PASS_STREAMS streams: out[s] = block . x[s].
 * `streams` and `dtype` are constants at every call site, so each combination compiles to its own
 * loop with the accumulators in registers. Four accumulators per stream (one per column of a
 * 64-byte step of four columns) hide the latency of the fused multiply-adds; the weights and x
 * advance by pointer so the loop carries no index arithmetic. */
INLINE void matvec_block(int dtype, int streams, const void *block, int cols_padded, const float *const *x,
                         v16f *out) {
    v16f acc[MAX_PASS_STREAMS][4];
    for (int s = 0; s < streams; s++)
        for (int u = 0; u < 4; u++) acc[s][u] = vsplat(0.0f);
    const int quads = cols_padded / 4, rest = cols_padded % 4;
    const float *xs[MAX_PASS_STREAMS];
    for (int s = 0; s < streams; s++) xs[s] = x[s];
    if (dtype == WEIGHT_F32) {
        const float *w = (const float *)block;
        for (int q = 0; q < quads; q++, w += 4 * PACK_ROWS) {
            v16f c0 = vload(w), c1 = vload(w + PACK_ROWS), c2 = vload(w + 2 * PACK_ROWS), c3 = vload(w + 3 * PACK_ROWS);
            quad_accumulate(streams, c0, c1, c2, c3, xs, acc);
        }
        for (int j = 0; j < rest; j++, w += PACK_ROWS)
            for (int s = 0; s < streams; s++) acc[s][j] += vload(w) * xs[s][j];
    } else if (dtype == WEIGHT_BF16) {
        const uint16_t *w = (const uint16_t *)block;
        for (int q = 0; q < quads; q++, w += 4 * PACK_ROWS) {
            v16u first = vload_bits(w), second = vload_bits(w + 2 * PACK_ROWS);
            v16f c0 = bf16_low(first), c1 = bf16_high(first), c2 = bf16_low(second), c3 = bf16_high(second);
            quad_accumulate(streams, c0, c1, c2, c3, xs, acc);
        }
        if (rest) { /* cols_padded is even: one pair left */
            v16u lanes = vload_bits(w);
            for (int s = 0; s < streams; s++) {
                acc[s][0] += bf16_low(lanes) * xs[s][0];
                acc[s][1] += bf16_high(lanes) * xs[s][1];
            }
        }
    } else { /* int8: cols_padded is a multiple of 4 */
        const int8_t *w = (const int8_t *)block;
        for (int q = 0; q < quads; q++, w += 4 * PACK_ROWS) {
            v16u lanes = vload_bits(w);
            v16f c0 = i8_byte(lanes, 0), c1 = i8_byte(lanes, 1), c2 = i8_byte(lanes, 2), c3 = i8_byte(lanes, 3);
            quad_accumulate(streams, c0, c1, c2, c3, xs, acc);
        }
    }
    for (int s = 0; s < streams; s++) out[s] = (acc[s][0] + acc[s][1]) + (acc[s][2] + acc[s][3]);
}

INLINE size_t block_bytes_of(const packed_matrix *w, int dtype) {
    return (size_t)padded_cols(w->cols, dtype) * PACK_ROWS * (dtype == WEIGHT_F32 ? 4 : dtype == WEIGHT_BF16 ? 2 : 1);
}

/* Row blocks [first_block, last_block) of one group of `streams` <= MAX_PASS_STREAMS streams. */
INLINE void matvec_pass(int dtype, int streams, const packed_matrix *w, const float *const *x, float *const *y,
                        int first_block, int last_block) {
    const int cols_padded = padded_cols(w->cols, dtype);
    const size_t block_bytes = block_bytes_of(w, dtype);
    for (int b = first_block; b < last_block; b++) {
        v16f out[MAX_PASS_STREAMS];
        matvec_block(dtype, streams, (const char *)w->data + b * block_bytes, cols_padded, x, out);
        v16f scale = w->scale ? vload(w->scale + b * PACK_ROWS) : vsplat(1.0f);
        v16f bias = w->bias ? vload(w->bias + b * PACK_ROWS) : vsplat(0.0f);
        for (int s = 0; s < streams; s++) vstore(y[s] + b * PACK_ROWS, out[s] * scale + bias);
    }
}

#define MATVEC_CASE(dtype, streams) \
    case (dtype) * 8 + (streams): matvec_pass((dtype), (streams), w, xs, ys, first_block, last_block); break;
#define MATVEC_CASES(dtype) \
    MATVEC_CASE(dtype, 1) MATVEC_CASE(dtype, 2) MATVEC_CASE(dtype, 3) MATVEC_CASE(dtype, 4)

/* Bytes of weights a tile of row blocks spans: small enough to stay in L2 while every group of
 * streams passes over it, so a batch reads each weight from memory (or L3) once per call. */
#define MATVEC_TILE_BYTES (128 * 1024)

static void matvec(const packed_matrix *w, const float *const *x, float *const *y, int streams) {
    const int blocks = padded_rows(w->rows) / PACK_ROWS;
    const size_t block_bytes = block_bytes_of(w, w->dtype);
    const int tile = block_bytes >= MATVEC_TILE_BYTES ? 1 : (int)(MATVEC_TILE_BYTES / block_bytes);
    for (int first_block = 0; first_block < blocks; first_block += tile) {
        const int last_block = first_block + tile < blocks ? first_block + tile : blocks;
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
}
