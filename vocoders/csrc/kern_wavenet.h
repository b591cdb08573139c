/* The WaveNet sampling loop, sample by sample, as WaveNet.step in vocoders/models/wavenet.py, with
 * Fast WaveNet ring buffers: each layer keeps its last (k - 1) d inputs, so a step costs O(layers).
 * Included by kernels_<isa>.c after simd.h and kern_matvec.h (it uses their matvec and draw_class).
 *
 * Per step and stream: x = embedding[previous]; for each layer, the taps x_l[t - (k-1-j) d] of the
 * ring buffer and x_l[t] are laid side by side and multiplied by the layer's [G, k R] matrix in one
 * product; the layer conditioning (bias + speaker + the frame-rate projection interpolated with
 * this sample's upsampler weights) is added, then z = tanh(a[:G/2]) sigmoid(a[G/2:]) and one
 * [R + S, G/2] product gives the residual and skip contributions. The streams of one call step
 * together and share every read of the weights.
 *
 * Exactness: float32 sums in another order than PyTorch's and polynomial tanh / sigmoid (about
 * 1e-7 absolute), so logits differ from the reference by rounding only; draws use the reference's
 * float64 inverse CDF (draw_class). */

/* x[0..n) += a[0..n) (vectors, then a scalar tail). */
INLINE void add_into(float *x, const float *a, int n) {
    int i = 0;
    for (; i + VL <= n; i += VL) vstore(x + i, vload(x + i) + vload(a + i));
    for (; i < n; i++) x[i] += a[i];
}

/* Gate pre-activations a[0..G) += constant + sum_k up[k] * local[k][.], then z = tanh(a[:half]) * sigmoid(a[half:]). */
INLINE void gates(float *a, const float *constant, const float *local, size_t frame_stride, const float *up, int taps,
                  int half, float *z) {
    const int G = 2 * half;
    int g = 0;
    for (; g + VL <= G; g += VL) {
        vf v = vload(a + g) + vload(constant + g);
        for (int k = 0; k < taps; k++) v += vload(local + (size_t)k * frame_stride + g) * up[k];
        vstore(a + g, v);
    }
    for (; g < G; g++) {
        float v = a[g] + constant[g];
        for (int k = 0; k < taps; k++) v += local[(size_t)k * frame_stride + g] * up[k];
        a[g] = v;
    }
    int i = 0;
    for (; i + VL <= half; i += VL) vstore(z + i, vtanh(vload(a + i)) * vsigmoid(vload(a + half + i)));
    for (; i < half; i++) z[i] = tanh1(a[i]) * sigmoid1(a[half + i]);
}

static int wavenet_run(const wavenet_weights *w, const wavenet_job *job) {
    const int S = job->streams, T = job->steps, L = w->layers, K = w->kernel, R = w->residual, G = w->gate;
    const int half = G / 2, SK = w->skip, C = w->classes, LG = L * G, width = job->logits_width;
    const float residual_scale = (float)sqrt(0.5), skip_scale = (float)(1.0 / sqrt((double)L));
    /* Ring buffers: layer l owns rows offset[l] .. offset[l] + (K - 1) d_l - 1 of [total][R]. */
    int64_t *offset = (int64_t *)calloc((size_t)L + 1, sizeof(int64_t));
    if (!offset) return -1;
    for (int l = 0; l < L; l++) offset[l + 1] = offset[l] + (int64_t)(K - 1) * w->dilations[l];
    /* Per stream (lengths padded past what the products read; zeros beyond the used part): */
    const size_t n_in = (size_t)K * R + 64, n_a = (size_t)padded_rows(G) + 16, n_z = (size_t)half + 64;
    const size_t n_o = (size_t)padded_rows(R + SK) + 16, n_x = (size_t)R + 16, n_skip = (size_t)SK + 64;
    const size_t n_h = (size_t)padded_rows(w->head) + 64, n_c = (size_t)padded_rows(C) + 16;
    const size_t n_hist = (size_t)offset[L] * R;
    const size_t per_stream = n_in + n_a + n_z + n_o + n_x + n_skip + n_h + n_c + n_hist;
    float *arena = (float *)calloc((size_t)S * per_stream, sizeof(float));
    float **p = (float **)calloc((size_t)S * 9, sizeof(float *));
    int64_t *previous = (int64_t *)calloc((size_t)S, sizeof(int64_t));
    double *cdf = (double *)calloc((size_t)C + 8, sizeof(double));
    if (!arena || !p || !previous || !cdf) {
        free(offset), free(arena), free(p), free(previous), free(cdf);
        return -1;
    }
    float **in = p, **a = p + S, **z = p + 2 * S, **o = p + 3 * S, **x = p + 4 * S, **skip = p + 5 * S;
    float **h = p + 6 * S, **logits = p + 7 * S, **history = p + 8 * S;
    for (int s = 0; s < S; s++) {
        float *base = arena + (size_t)s * per_stream;
        in[s] = base, a[s] = in[s] + n_in, z[s] = a[s] + n_a, o[s] = z[s] + n_z, x[s] = o[s] + n_o;
        skip[s] = x[s] + n_x, h[s] = skip[s] + n_skip, logits[s] = h[s] + n_h, history[s] = logits[s] + n_c;
        previous[s] = w->silence;
        if (job->history) {
            memcpy(history[s], job->history + (size_t)s * n_hist, n_hist * sizeof(float));
            previous[s] = job->previous[s];
        }
    }
    const int64_t t0 = job->start;
    for (int t = 0; t < T; t++) {
        const int frame = t / w->hop;
        const float *up = w->upsample + (size_t)(t % w->hop) * w->taps;
        for (int s = 0; s < S; s++) {
            memcpy(x[s], w->embedding + (size_t)previous[s] * R, (size_t)R * sizeof(float));
            memset(skip[s], 0, (size_t)SK * sizeof(float));
        }
        for (int l = 0; l < L; l++) {
            const int64_t d = w->dilations[l], span = (int64_t)(K - 1) * d;
            for (int s = 0; s < S; s++) {
                float *ring = history[s] + (size_t)offset[l] * R;
                for (int j = 0; j < K - 1; j++) {
                    const int64_t row = (t0 + t - (int64_t)(K - 1 - j) * d) % span;
                    memcpy(in[s] + (size_t)j * R, ring + (size_t)(row < 0 ? row + span : row) * R,
                           (size_t)R * sizeof(float));
                }
                memcpy(in[s] + (size_t)(K - 1) * R, x[s], (size_t)R * sizeof(float));
            }
            matvec(&w->dilated[l], (const float *const *)in, a, S);
            for (int s = 0; s < S; s++) {
                const float *local = job->local + ((size_t)s * job->cond_frames + frame) * LG + (size_t)l * G;
                gates(a[s], job->constant + (size_t)s * LG + (size_t)l * G, local, (size_t)LG, up, w->taps, half, z[s]);
                /* x_l[t] replaces x_l[t - (K - 1) d] in the ring, whose last use was just above. */
                memcpy(history[s] + (size_t)(offset[l] + (t0 + t) % span) * R, x[s], (size_t)R * sizeof(float));
            }
            matvec(&w->out[l], (const float *const *)z, o, S);
            for (int s = 0; s < S; s++) {
                int r = 0;
                for (; r + VL <= R; r += VL) vstore(x[s] + r, (vload(x[s] + r) + vload(o[s] + r)) * residual_scale);
                for (; r < R; r++) x[s][r] = (x[s][r] + o[s][r]) * residual_scale;
                add_into(skip[s], o[s] + R, SK);
            }
        }
        for (int s = 0; s < S; s++)
            for (int q = 0; q < SK; q++) skip[s][q] = skip[s][q] > 0.0f ? skip[s][q] * skip_scale : 0.0f;
        matvec(&w->head1, (const float *const *)skip, h, S);
        for (int s = 0; s < S; s++)
            for (int q = 0; q < w->head; q++) h[s][q] = h[s][q] > 0.0f ? h[s][q] : 0.0f;
        matvec(&w->head2, (const float *const *)h, logits, S);
        for (int s = 0; s < S; s++) {
            const size_t at = (size_t)s * T + t;
            previous[s] = job->forced ? job->forced[at]
                                      : draw_class(logits[s], C, job->noise[at], job->temperature, cdf);
            job->samples[at] = previous[s];
            if (job->logits) memcpy(job->logits + at * width, logits[s], (size_t)C * sizeof(float));
        }
    }
    if (job->history)
        for (int s = 0; s < S; s++) {
            memcpy(job->history + (size_t)s * n_hist, history[s], n_hist * sizeof(float));
            job->previous[s] = previous[s];
        }
    free(offset), free(arena), free(p), free(previous), free(cdf);
    return 0;
}
