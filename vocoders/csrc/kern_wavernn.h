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
 * The exponentials run VD lanes at a time; the cumulative sum stays sequential, in the reference's
 * order. `cdf` has room for `classes` rounded up to 8. */
static int draw_class(const float *logits, int classes, float uniform, double temperature, double *cdf) {
    if (temperature <= 0.0) {
        int best = 0;
        for (int k = 1; k < classes; k++)
            if (logits[k] > logits[best]) best = k;
        return best;
    }
    const int vectors = classes / VD * VD;
    double top = -INFINITY;
    for (int k = 0; k < vectors; k += VD) {
        vd z = __builtin_convertvector(*(const vfh_mem *)(logits + k), vd) / temperature;
        *(vd_mem *)(cdf + k) = z;
    }
    for (int k = vectors; k < classes; k++) cdf[k] = (double)logits[k] / temperature;
    for (int k = 0; k < classes; k++) top = cdf[k] > top ? cdf[k] : top;
    for (int k = 0; k < vectors; k += VD) *(vd_mem *)(cdf + k) = vexp_nonpositive(*(vd_mem *)(cdf + k) - top);
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
    for (; j + VL <= hi; j += VL) {
        vf gi[3];
        for (int g = 0; g < 3; g++) {
            const int i = g * H + j;
            vf v = vload(w->bias_ih + i) + vload(w->w_c_prev + i) * c_prev + vload(w->w_f_prev + i) * f_prev;
            v += vload(w->w_c_now + i) * c_now;
            for (int k = 0; k < taps; k++) v += vload(cond + (size_t)k * H3 + i) * up[k];
            gi[g] = v;
        }
        vf r = vsigmoid(gi[0] + vload(gh + j));
        vf z = vsigmoid(gi[1] + vload(gh + H + j));
        vf n = vtanh(gi[2] + r * vload(gh + 2 * H + j));
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
    for (int i = 0; i < count; i += VL) vstore(x + i, vmax(vload(x + i), vsplat(0.0f)));
}

/* The working vectors of S streams, one pointer per stream: the state h and h_new (swapped after each
 * sample), R h, the output layers' hidden vector, the two logit vectors, and h_new's fine half. */
typedef struct {
    float **h, **h_new, **gh, **o, **coarse_logits, **fine_logits, **h_fine;
} stream_vectors;

/* What one stream reads and writes for one sample. */
typedef struct {
    const float *cond;     /* [taps][3H] its frame's conditioning (W_cond applied), interpolated with `up` */
    const float *noise;    /* [2] uniform draws (coarse, fine) */
    const int64_t *forced; /* the class fed back (teacher forcing), or NULL */
    int64_t *sample;       /* out: the class */
    float *logits;         /* out: [2][width] coarse then fine logits, or NULL */
} sample_io;

/* One sample of S streams: R h for all, the coarse half of the gates, O1/O2, the coarse draws, the
 * fine half, O3/O4, the fine draws. previous[s] is stream s's last class (updated); coarse is scratch
 * for S values; h and h_new are swapped per stream at the end. */
INLINE void wavernn_sample(const wavernn_weights *w, int S, const stream_vectors *v, int64_t *previous,
                           int64_t *coarse, const sample_io *io, const float *up, int width, double temperature,
                           double *cdf) {
    const int half = w->half, H = w->hidden, Kc = w->coarse_classes, Kf = w->fine_classes, fine_bits = w->fine_bits;
    const float coarse_step = (float)(2.0 / (Kc - 1)), fine_step = (float)(2.0 / (Kf - 1));
    const size_t n_o = padded_rows(w->out_hidden);
    matvec(&w->R, (const float *const *)v->h, v->gh, S);
    for (int s = 0; s < S; s++) {
        float c_prev = (float)(previous[s] >> fine_bits) * coarse_step - 1.0f;
        float f_prev = (float)(previous[s] & (Kf - 1)) * fine_step - 1.0f;
        gru_rows(w, io[s].cond, up, c_prev, f_prev, 0.0f, v->gh[s], v->h[s], v->h_new[s], 0, half);
    }
    matvec(&w->O1, (const float *const *)v->h_new, v->o, S);
    for (int s = 0; s < S; s++) relu(v->o[s], (int)n_o);
    matvec(&w->O2, (const float *const *)v->o, v->coarse_logits, S);
    for (int s = 0; s < S; s++) {
        coarse[s] = io[s].forced ? *io[s].forced >> fine_bits
                                 : draw_class(v->coarse_logits[s], Kc, io[s].noise[0], temperature, cdf);
        if (io[s].logits) memcpy(io[s].logits, v->coarse_logits[s], (size_t)Kc * sizeof(float));
        float c_prev = (float)(previous[s] >> fine_bits) * coarse_step - 1.0f;
        float f_prev = (float)(previous[s] & (Kf - 1)) * fine_step - 1.0f;
        float c_now = (float)coarse[s] * coarse_step - 1.0f;
        gru_rows(w, io[s].cond, up, c_prev, f_prev, c_now, v->gh[s], v->h[s], v->h_new[s], half, H);
        v->h_fine[s] = v->h_new[s] + half;
    }
    matvec(&w->O3, (const float *const *)v->h_fine, v->o, S);
    for (int s = 0; s < S; s++) relu(v->o[s], (int)n_o);
    matvec(&w->O4, (const float *const *)v->o, v->fine_logits, S);
    for (int s = 0; s < S; s++) {
        int64_t fine = io[s].forced ? *io[s].forced & (Kf - 1)
                                    : draw_class(v->fine_logits[s], Kf, io[s].noise[1], temperature, cdf);
        if (io[s].logits) memcpy(io[s].logits + width, v->fine_logits[s], (size_t)Kf * sizeof(float));
        previous[s] = (coarse[s] << fine_bits) | fine;
        *io[s].sample = previous[s];
        float *swap = v->h[s];
        v->h[s] = v->h_new[s], v->h_new[s] = swap;
    }
}

/* Floats of one stream's working vectors (every length a multiple of 16; h and h_new are zero
 * beyond H, so the padded columns read zeros). */
INLINE size_t stream_floats(const wavernn_weights *w) {
    const size_t n_h = (size_t)padded_rows(w->hidden) + PACK_ROWS, n_gh = padded_rows(3 * w->hidden);
    return 2 * n_h + n_gh + padded_rows(w->out_hidden) + padded_rows(w->coarse_classes) +
           padded_rows(w->fine_classes);
}

/* Points stream s's vectors into `base` (stream_floats(w) floats). */
INLINE void place_stream(const wavernn_weights *w, float *base, const stream_vectors *v, int s) {
    const size_t n_h = (size_t)padded_rows(w->hidden) + PACK_ROWS, n_gh = padded_rows(3 * w->hidden);
    v->h[s] = base, v->h_new[s] = base + n_h, v->gh[s] = base + 2 * n_h, v->o[s] = v->gh[s] + n_gh;
    v->coarse_logits[s] = v->o[s] + padded_rows(w->out_hidden);
    v->fine_logits[s] = v->coarse_logits[s] + padded_rows(w->coarse_classes);
}

/* stream_vectors over 7 * S pointers at `pointers`. */
INLINE stream_vectors stream_vectors_at(float **pointers, int S) {
    stream_vectors v = {pointers,         pointers + S,     pointers + 2 * S, pointers + 3 * S,
                        pointers + 4 * S, pointers + 5 * S, pointers + 6 * S};
    return v;
}

static int wavernn_run(const wavernn_weights *w, const wavernn_job *job) {
    const int S = job->streams, T = job->steps, H = w->hidden, H3 = 3 * H, width = job->logits_width;
    const size_t per_stream = stream_floats(w);
    float *arena = (float *)calloc((size_t)S * per_stream, sizeof(float));
    float **pointers = (float **)calloc((size_t)S * 7, sizeof(float *));
    int64_t *coarse = (int64_t *)calloc((size_t)S, sizeof(int64_t));
    sample_io *io = (sample_io *)calloc((size_t)S, sizeof(sample_io));
    double *cdf = (double *)calloc((size_t)(w->coarse_classes > w->fine_classes ? w->coarse_classes : w->fine_classes),
                                   sizeof(double));
    if (!arena || !pointers || !coarse || !io || !cdf) {
        free(arena), free(pointers), free(coarse), free(io), free(cdf);
        return -1;
    }
    const stream_vectors v = stream_vectors_at(pointers, S);
    for (int s = 0; s < S; s++) {
        place_stream(w, arena + (size_t)s * per_stream, &v, s);
        memcpy(v.h[s], job->hidden + (size_t)s * H, (size_t)H * sizeof(float));
    }
    for (int t = job->first; t < job->last; t++) {
        const int frame = t / w->hop;
        for (int s = 0; s < S; s++) {
            const size_t at = (size_t)s * T + t;
            io[s].cond = job->cond + ((size_t)s * job->cond_frames + frame) * H3;
            io[s].noise = job->noise + 2 * at;
            io[s].forced = job->forced ? job->forced + at : NULL;
            io[s].sample = job->samples + at;
            io[s].logits = job->logits ? job->logits + 2 * at * width : NULL;
        }
        wavernn_sample(w, S, &v, job->previous, coarse, io, w->upsample + (size_t)(t % w->hop) * w->taps, width,
                       job->temperature, cdf);
    }
    for (int s = 0; s < S; s++) memcpy(job->hidden + (size_t)s * H, v.h[s], (size_t)H * sizeof(float));
    free(arena), free(pointers), free(coarse), free(io), free(cdf);
    return 0;
}
