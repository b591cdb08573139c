/* The dual-softmax WaveRNN sampling loop, sample by sample, as WaveRNN.step in
 * vocoders/models/wavernn.py: R h once, the coarse half of the gates, draw c_t, add c_t to the fine
 * half, draw f_t. Included by kernels_<isa>.c after simd.h and kern_matvec.h.
 *
 * Exactness: the loop reorders float32 sums (blocked products, the conditioning projected at
 * frame rate then interpolated), so logits differ from the reference by rounding only; the draws
 * use the reference's float64 inverse CDF, so they agree unless a logit sits within that rounding
 * of a class boundary. */

/* Inverse-CDF draw as vocoders/sampling.py: float64 softmax of logits / temperature, cumulative
 * sum in class order, the first class whose cdf exceeds uniform * total; temperature <= 0: argmax.
 * The exponentials run 8 lanes at a time; the cumulative sum stays sequential, in the reference's
 * order. `cdf` has room for `classes` rounded up to 8. */
static int draw_class(const float *logits, int classes, float uniform, double temperature, double *cdf) {
    if (temperature <= 0.0) {
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (logits[k] > logits[best]) best = k;
        return best;
    }
    const int vectors = classes / 8 * 8;
    double top = -INFINITY;
    for (int k = 0; k < vectors; k += 8) {
        v8d z = __builtin_convertvector(*(const v8f_mem *)(logits + k), v8d) / temperature;
        *(v8d_mem *)(cdf + k) = z;
    }
    for (int k = vectors; k < classes; k++) cdf[k] = (double)logits[k] / temperature;
    for (int k = 0; k < classes; k++) top = cdf[k] > top ? cdf[k] : top;
    for (int k = 0; k < vectors; k += 8) *(v8d_mem *)(cdf + k) = vexp_nonpositive(*(v8d_mem *)(cdf + k) - top);
    for (int k = vectors; k < classes; k++) cdf[k] = exp(cdf[k] - top);
    double total = 0.0;
    for (int k = 0; k < classes; k++) {
        total += cdf[k];
        cdf[k] = total;
    }
    const double threshold = (double)uniform * total;
    int index = 0;
    for (int k = 0; k < classes; k++) index += cdf[k] <= threshold;
    return index < classes - 1 ? index : classes - 1;
}

/* GRU rows [lo, hi) of one stream. The input projection is the frame-rate conditioning `cond`
 * ([taps][3H], W_cond already applied) interpolated with this sample's upsampler weights `up`,
 * plus the bias and the sample columns; then r, z, n and the new state h_new. */
INLINE void gru_rows(const wavernn_weights *w, const float *cond, const float *up, float c_prev, float f_prev,
                     float c_now, const float *gh, const float *h, float *h_new, int lo, int hi) {
    const int H = w->hidden, H3 = 3 * H, taps = w->taps;
    int j = lo;
    for (; j + 16 <= hi; j += 16) {
        v16f gi[3];
        for (int g = 0; g < 3; g++) {
            const int i = g * H + j;
            v16f v = vload(w->bias_ih + i) + vload(w->w_c_prev + i) * c_prev + vload(w->w_f_prev + i) * f_prev;
            v += vload(w->w_c_now + i) * c_now;
            for (int k = 0; k < taps; k++) v += vload(cond + (size_t)k * H3 + i) * up[k];
            gi[g] = v;
        }
        v16f r = vsigmoid(gi[0] + vload(gh + j));
        v16f z = vsigmoid(gi[1] + vload(gh + H + j));
        v16f n = vtanh(gi[2] + r * vload(gh + 2 * H + j));
        vstore(h_new + j, z * vload(h + j) + (1.0f - z) * n);
    }
    for (; j < hi; j++) {
        float gi[3];
        for (int g = 0; g < 3; g++) {
            const int i = g * H + j;
            float v = w->bias_ih[i] + w->w_c_prev[i] * c_prev + w->w_f_prev[i] * f_prev + w->w_c_now[i] * c_now;
            for (int k = 0; k < taps; k++) v += cond[(size_t)k * H3 + i] * up[k];
            gi[g] = v;
        }
        float r = sigmoid1(gi[0] + gh[j]), z = sigmoid1(gi[1] + gh[H + j]);
        float n = tanh1(gi[2] + r * gh[2 * H + j]);
        h_new[j] = z * h[j] + (1.0f - z) * n;
    }
}

INLINE void relu(float *x, int count) {
    for (int i = 0; i < count; i += 16) vstore(x + i, vmax(vload(x + i), vsplat(0.0f)));
}

static int wavernn_run(const wavernn_weights *w, const wavernn_job *job) {
    const int S = job->streams, T = job->steps, H = w->hidden, half = w->half, H3 = 3 * H;
    const int Kc = w->coarse_classes, Kf = w->fine_classes, fine_bits = w->fine_bits, width = job->logits_width;
    const float coarse_step = (float)(2.0 / (Kc - 1)), fine_step = (float)(2.0 / (Kf - 1));
    /* Per stream: h and h_new (zero beyond H: the padded columns read zeros), R h, the output
     * layers' hidden vector and the two logit vectors; every length a multiple of 16. */
    const size_t n_h = (size_t)padded_rows(H) + PACK_ROWS, n_gh = padded_rows(H3);
    const size_t n_o = padded_rows(w->out_hidden), n_c = padded_rows(Kc), n_f = padded_rows(Kf);
    const size_t per_stream = 2 * n_h + n_gh + n_o + n_c + n_f;
    float *arena = (float *)calloc((size_t)S * per_stream, sizeof(float));
    float **pointers = (float **)calloc((size_t)S * 7, sizeof(float *));
    int64_t *coarse = (int64_t *)calloc((size_t)S, sizeof(int64_t));
    double *cdf = (double *)calloc((size_t)(Kc > Kf ? Kc : Kf), sizeof(double));
    if (!arena || !pointers || !coarse || !cdf) {
        free(arena), free(pointers), free(coarse), free(cdf);
        return -1;
    }
    int64_t *previous = job->previous;
    float **h = pointers, **h_new = pointers + S, **gh = pointers + 2 * S, **o = pointers + 3 * S;
    float **coarse_logits = pointers + 4 * S, **fine_logits = pointers + 5 * S, **h_fine = pointers + 6 * S;
    for (int s = 0; s < S; s++) {
        float *base = arena + (size_t)s * per_stream;
        h[s] = base, h_new[s] = base + n_h, gh[s] = base + 2 * n_h, o[s] = gh[s] + n_gh;
        coarse_logits[s] = o[s] + n_o, fine_logits[s] = coarse_logits[s] + n_c;
        memcpy(h[s], job->hidden + (size_t)s * H, (size_t)H * sizeof(float));
    }
    for (int t = job->first; t < job->last; t++) {
        const int frame = t / w->hop;
        const float *up = w->upsample + (size_t)(t % w->hop) * w->taps;
        matvec(&w->R, (const float *const *)h, gh, S);
        for (int s = 0; s < S; s++) {
            const float *cond = job->cond + ((size_t)s * job->cond_frames + frame) * H3;
            float c_prev = (float)(previous[s] >> fine_bits) * coarse_step - 1.0f;
            float f_prev = (float)(previous[s] & (Kf - 1)) * fine_step - 1.0f;
            gru_rows(w, cond, up, c_prev, f_prev, 0.0f, gh[s], h[s], h_new[s], 0, half);
        }
        matvec(&w->O1, (const float *const *)h_new, o, S);
        for (int s = 0; s < S; s++) relu(o[s], (int)n_o);
        matvec(&w->O2, (const float *const *)o, coarse_logits, S);
        for (int s = 0; s < S; s++) {
            const size_t at = (size_t)s * T + t;
            coarse[s] = job->forced ? job->forced[at] >> fine_bits
                                    : draw_class(coarse_logits[s], Kc, job->noise[2 * at], job->temperature, cdf);
            if (job->logits) memcpy(job->logits + 2 * at * width, coarse_logits[s], (size_t)Kc * sizeof(float));
            const float *cond = job->cond + ((size_t)s * job->cond_frames + frame) * H3;
            float c_prev = (float)(previous[s] >> fine_bits) * coarse_step - 1.0f;
            float f_prev = (float)(previous[s] & (Kf - 1)) * fine_step - 1.0f;
            float c_now = (float)coarse[s] * coarse_step - 1.0f;
            gru_rows(w, cond, up, c_prev, f_prev, c_now, gh[s], h[s], h_new[s], half, H);
            h_fine[s] = h_new[s] + half;
        }
        matvec(&w->O3, (const float *const *)h_fine, o, S);
        for (int s = 0; s < S; s++) relu(o[s], (int)n_o);
        matvec(&w->O4, (const float *const *)o, fine_logits, S);
        for (int s = 0; s < S; s++) {
            const size_t at = (size_t)s * T + t;
            int64_t fine = job->forced ? job->forced[at] & (Kf - 1)
                                       : draw_class(fine_logits[s], Kf, job->noise[2 * at + 1], job->temperature, cdf);
            if (job->logits) memcpy(job->logits + (2 * at + 1) * width, fine_logits[s], (size_t)Kf * sizeof(float));
            previous[s] = (coarse[s] << fine_bits) | fine;
            job->samples[at] = previous[s];
            float *swap = h[s];
            h[s] = h_new[s], h_new[s] = swap;
        }
    }
    for (int s = 0; s < S; s++) memcpy(job->hidden + (size_t)s * H, h[s], (size_t)H * sizeof(float));
    free(arena), free(pointers), free(coarse), free(cdf);
    return 0;
}
