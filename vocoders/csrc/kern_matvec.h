/* Dense kernels: the read-bandwidth probe and packed matrix-vector products (float32, bfloat16
 * pairs, int8 quads; float32 accumulation). Included by kernels_<isa>.c after simd.h. */

static double read_sum(const float *data, size_t count, int reps) {
    vf acc[8] = {{0}};
    size_t blocks = count / 128;
    for (int r = 0; r < reps; r++) {
        const float *p = data;
        for (size_t b = 0; b < blocks; b++, p += 128)
            for (int k = 0; k < 128 / VL; k++) acc[k % 8] += vload(p + VL * k);
    }
    vf total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return vsum(total);
}

/* Four weight columns of one 16-row block (c[u][h]: column u, rows VL h .. VL h + VL) times the next
 * four inputs of every stream, into that stream's four accumulators; each input pointer advances by four. */
INLINE void quad_accumulate(int streams, vf c[4][NV], const float **xs, vf acc[][4][NV]) {
    for (int s = 0; s < streams; s++) {
        const float *xq = xs[s];
        for (int u = 0; u < 4; u++)
            for (int h = 0; h < NV; h++) acc[s][u][h] += c[u][h] * xq[u];
        xs[s] = xq + 4;
    }
}

/* One 16-row block of bfloat16 or int8 weights (float32 takes matvec_group_f32) for `streams` <=
 * MAX_PASS_STREAMS streams: out[s] = block . x[s] (NV vectors each).
 * `streams` and `dtype` are constants at every call site, so each combination compiles to its own
 * loop with the accumulators in registers. Four accumulators per stream and row vector (one per
 * column of a 64-byte step of four columns) hide the latency of the fused multiply-adds; the
 * weights and x advance by pointer so the loop carries no index arithmetic. */
INLINE void matvec_block(int dtype, int streams, const void *block, int cols_padded, const float *const *x,
                         vf out[][NV]) {
    vf acc[MAX_PASS_STREAMS][4][NV], c[4][NV];
    for (int s = 0; s < streams; s++)
        for (int u = 0; u < 4; u++)
            for (int h = 0; h < NV; h++) acc[s][u][h] = vsplat(0.0f);
    const int quads = cols_padded / 4, rest = cols_padded % 4;
    const float *xs[MAX_PASS_STREAMS];
    for (int s = 0; s < streams; s++) xs[s] = x[s];
    if (dtype == WEIGHT_BF16) {
        const uint16_t *w = (const uint16_t *)block; /* 16 rows x 2 columns per 64 bytes */
        for (int q = 0; q < quads; q++, w += 4 * PACK_ROWS) {
            for (int h = 0; h < NV; h++) {
                vu first = vload_bits(w + 2 * h * VL), second = vload_bits(w + 2 * PACK_ROWS + 2 * h * VL);
                c[0][h] = bf16_low(first), c[1][h] = bf16_high(first);
                c[2][h] = bf16_low(second), c[3][h] = bf16_high(second);
            }
            quad_accumulate(streams, c, xs, acc);
        }
        if (rest) { /* cols_padded is even: one pair left */
            for (int h = 0; h < NV; h++) {
                vu lanes = vload_bits(w + 2 * h * VL);
                for (int s = 0; s < streams; s++) {
                    acc[s][0][h] += bf16_low(lanes) * xs[s][0];
                    acc[s][1][h] += bf16_high(lanes) * xs[s][1];
                }
            }
        }
    } else { /* int8: cols_padded is a multiple of 4; 16 rows x 4 columns per 64 bytes */
        const int8_t *w = (const int8_t *)block;
        for (int q = 0; q < quads; q++, w += 4 * PACK_ROWS) {
            for (int h = 0; h < NV; h++) {
                vu lanes = vload_bits(w + 4 * h * VL);
                for (int u = 0; u < 4; u++) c[u][h] = i8_byte(lanes, u);
            }
            quad_accumulate(streams, c, xs, acc);
        }
    }
    for (int s = 0; s < streams; s++)
        for (int h = 0; h < NV; h++) out[s][h] = (acc[s][0][h] + acc[s][1][h]) + (acc[s][2][h] + acc[s][3][h]);
}

INLINE size_t block_bytes_of(const packed_matrix *w, int dtype) {
    return (size_t)padded_cols(w->cols, dtype) * PACK_ROWS * (dtype == WEIGHT_F32 ? 4 : dtype == WEIGHT_BF16 ? 2 : 1);
}

/* Row blocks a float32 pass takes at once: one weight load per block and one broadcast per stream
 * feed blocks x streams independent fused multiply-adds, so loads stay below the FMA rate when the
 * streams share a matrix (Subscale, batches). Sized so that the accumulators (streams x group x NV)
 * and the group's weight vectors fit the registers: 32 on AVX-512, 16 on AVX2. */
#if VL == 16
#define F32_ROW_GROUP_MAX 8
INLINE int f32_row_group(int streams) { return streams <= 2 ? 8 : 6; }
#else
#define F32_ROW_GROUP_MAX 4
INLINE int f32_row_group(int streams) { return streams <= 1 ? 4 : streams <= 2 ? 2 : 1; }
#endif

/* `group` consecutive float32 16-row blocks (the first at w, `block_floats` apart) for `streams`
 * streams: y[s] block r = block r . x[s], scaled and biased. Each (stream, row) sums its columns in
 * column order into one accumulator, so a stream's output does not depend on the group size, on
 * VL, or on the streams it shares the pass with. */
INLINE void matvec_group_f32(int streams, int group, const float *w, size_t block_floats, int cols,
                             const float *const *x, float *const *y, int first_row, const float *scale,
                             const float *bias) {
    vf acc[MAX_PASS_STREAMS][F32_ROW_GROUP_MAX][NV];
    const float *col[F32_ROW_GROUP_MAX];
    for (int r = 0; r < group; r++) col[r] = w + r * block_floats;
    for (int s = 0; s < streams; s++)
        for (int r = 0; r < group; r++)
            for (int h = 0; h < NV; h++) acc[s][r][h] = vsplat(0.0f);
    for (int j = 0; j < cols; j++) {
        vf c[F32_ROW_GROUP_MAX][NV];
        for (int r = 0; r < group; r++) {
            for (int h = 0; h < NV; h++) c[r][h] = vload(col[r] + h * VL);
            col[r] += PACK_ROWS;
        }
        for (int s = 0; s < streams; s++) {
            const float xj = x[s][j];
            for (int r = 0; r < group; r++)
                for (int h = 0; h < NV; h++) acc[s][r][h] += c[r][h] * xj;
        }
    }
    for (int r = 0; r < group; r++)
        for (int h = 0; h < NV; h++) {
            const int row = first_row + r * PACK_ROWS + h * VL;
            vf sc = scale ? vload(scale + row) : vsplat(1.0f);
            vf bi = bias ? vload(bias + row) : vsplat(0.0f);
            for (int s = 0; s < streams; s++) vstore(y[s] + row, acc[s][r][h] * sc + bi);
        }
}

/* Row blocks [first_block, last_block) of one group of `streams` <= MAX_PASS_STREAMS streams. */
INLINE void matvec_pass(int dtype, int streams, const packed_matrix *w, const float *const *x, float *const *y,
                        int first_block, int last_block) {
    const int cols_padded = padded_cols(w->cols, dtype);
    const size_t block_bytes = block_bytes_of(w, dtype);
    if (dtype == WEIGHT_F32) {
        const int group = f32_row_group(streams);
        const size_t block_floats = block_bytes / sizeof(float);
        const float *data = (const float *)w->data;
        int b = first_block;
        for (; b + group <= last_block; b += group)
            matvec_group_f32(streams, group, data + b * block_floats, block_floats, cols_padded, x, y,
                             b * PACK_ROWS, w->scale, w->bias);
        /* The rest (fewer than `group` blocks) in groups of 4, 2 and 1: each size a constant, so each
         * call compiles with its accumulators in registers (a variable size would not). */
        if (group > 4 && b + 4 <= last_block) {
            matvec_group_f32(streams, 4, data + b * block_floats, block_floats, cols_padded, x, y,
                             b * PACK_ROWS, w->scale, w->bias);
            b += 4;
        }
        if (group > 2 && b + 2 <= last_block) {
            matvec_group_f32(streams, 2, data + b * block_floats, block_floats, cols_padded, x, y,
                             b * PACK_ROWS, w->scale, w->bias);
            b += 2;
        }
        for (; b < last_block; b++)
            matvec_group_f32(streams, 1, data + b * block_floats, block_floats, cols_padded, x, y,
                             b * PACK_ROWS, w->scale, w->bias);
        return;
    }
    for (int b = first_block; b < last_block; b++) {
        vf out[MAX_PASS_STREAMS][NV];
        matvec_block(dtype, streams, (const char *)w->data + b * block_bytes, cols_padded, x, out);
        for (int h = 0; h < NV; h++) {
            const int row = b * PACK_ROWS + h * VL;
            vf scale = w->scale ? vload(w->scale + row) : vsplat(1.0f);
            vf bias = w->bias ? vload(w->bias + row) : vsplat(0.0f);
            for (int s = 0; s < streams; s++) vstore(y[s] + row, out[s][h] * scale + bias);
        }
    }
}

#define MATVEC_CASE(dtype, streams) \
    case (dtype) * 8 + (streams): matvec_pass((dtype), (streams), w, xs, ys, first_block, last_block); break;
#define MATVEC_CASES(dtype) \
    MATVEC_CASE(dtype, 1) MATVEC_CASE(dtype, 2) MATVEC_CASE(dtype, 3) MATVEC_CASE(dtype, 4)

/* Bytes of weights a tile of row blocks spans: small enough to stay in L2 while every group of
 * streams passes over it, so a batch reads each weight from memory (or L3) once per call. */
#define MATVEC_TILE_BYTES (768 * 1024)

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
