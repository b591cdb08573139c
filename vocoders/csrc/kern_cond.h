/* The mel conditioning network (vocoders/models/layers.py ConditioningNetwork) on the frames of a
 * mel: a width-`kernel` convolution without padding and ReLU, then residual blocks
 * x + W2 relu(W1 x + b1) + b2, every layer a packed matrix-vector product per frame (`matvec`).
 * Each frame's numbers come from its own products alone, so they are the same whatever frames are
 * computed together: a stream computing a few frames per chunk gets the whole utterance's numbers.
 * Included by kernels_<isa>.c after kern_matvec.h. */

/* Frames computed together: one pass over each layer's weights serves them all. */
#define COND_GROUP 64

INLINE void relu_rows(float *const *rows, int count, int width) {
    for (int i = 0; i < count; i++)
        for (int c = 0; c < width; c++) rows[i][c] = rows[i][c] > 0.0f ? rows[i][c] : 0.0f;
}

/* Row `frame` of stream `b`'s windows, laid out as the convolution weight: x[m * kernel + j]. */
INLINE void gather_window(const cond_weights *w, const cond_job *job, int b, int frame, float *x) {
    const float *mel = job->mel + (ptrdiff_t)b * job->mel_batch_stride + frame;
    for (int m = 0; m < w->n_mels; m++, mel += job->mel_band_stride)
        for (int j = 0; j < w->kernel; j++) x[m * w->kernel + j] = mel[j];
}

static int cond_net(const cond_weights *w, const cond_job *job) {
    const int total = job->batch * job->frames, C = w->channels;
    const int group = total < COND_GROUP ? total : COND_GROUP;
    const size_t in_floats = (size_t)w->n_mels * w->kernel, width = (size_t)padded_rows(C);
    float *scratch = (float *)malloc(((size_t)group * (in_floats + 3 * width)) * sizeof(float));
    if (!scratch) return -1;
    float *xs[COND_GROUP], *h[COND_GROUP], *t[COND_GROUP], *u[COND_GROUP];
    for (int i = 0; i < group; i++) {
        xs[i] = scratch + i * in_floats;
        h[i] = scratch + group * in_floats + i * width;
        t[i] = h[i] + group * width;
        u[i] = t[i] + group * width;
    }
    for (int first = 0; first < total; first += group) {
        const int count = total - first < group ? total - first : group;
        for (int i = 0; i < count; i++)
            gather_window(w, job, (first + i) / job->frames, (first + i) % job->frames, xs[i]);
        matvec(&w->conv_in, (const float *const *)xs, h, count);
        relu_rows(h, count, C);
        for (int k = 0; k < w->blocks; k++) {
            matvec(&w->conv1[k], (const float *const *)h, t, count);
            relu_rows(t, count, C);
            matvec(&w->conv2[k], (const float *const *)t, u, count);
            for (int i = 0; i < count; i++)
                for (int c = 0; c < C; c++) h[i][c] = h[i][c] + u[i][c];
        }
        for (int i = 0; i < count; i++) memcpy(job->out + (size_t)(first + i) * C, h[i], (size_t)C * sizeof(float));
    }
    free(scratch);
    return 0;
}
