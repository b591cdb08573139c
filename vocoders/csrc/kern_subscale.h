/* The Subscale WaveRNN sampling loop (vocoders/models/subscale.py): every step, the masked dilated
 * context CNN advances each sub-tensor by one coordinate, W_cond projects the running sub-tensors'
 * conditioning in one product, and the WaveRNN core samples them as streams of one batch, so each
 * weight of R and O1-O4 is read once per step for up to B samples. Included by kernels_<isa>.c
 * after kern_wavernn.h (it reuses wavernn_sample and matvec).
 *
 * Same arithmetic as SubscaleContext.advance and SubscaleWaveRNN.step: sub-tensor s produces
 * position t - s (F + 1) at step t, its context read at coordinate position + F; the steps -F .. -1
 * compute the context columns sub-tensor 0 needs before its first output. The context layers'
 * outputs live in ring buffers per sub-tensor (a layer reads at most `lookback` coordinates back),
 * the samples' context values in a ring by position (other sub-tensors read them up to
 * (B - 1)(F + 1) - F + K - 1 steps later; a position's slot is cleared at the step sub-tensor 0
 * makes it, so positions never written - past the end - read zeros). All of the loop's state is the
 * caller's, so a call may run any range of steps and the next one carry on (streaming). */

/* Lookback of the dilated layers: how far back one layer reads at most. */
INLINE int context_lookback(const subscale_weights *w) {
    int widest = 1;
    for (int n = 0; n < w->layers; n++) widest = w->dilations[n] > widest ? (int)w->dilations[n] : widest;
    return (w->kernel - 1) * widest;
}

/* Sub-tensor s at `coordinate` of one utterance: the input convolution over the context values of
 * sub-tensors z < s, the residual dilated layers (each output stored in its ring at coordinate +
 * lookback), and, when `out` is not NULL, the D output features.
 * inputs: [input_ring][B][2] by position; rings: [layers + 1][ring][B][C]; h, layer: scratch of C floats. */
static void context_column(const subscale_weights *w, const float *inputs, int input_ring, float *rings, int ring,
                           int s, int coordinate, float *out, float *h, float *layer) {
    const int at = coordinate + context_lookback(w);
    const int B = w->factor, C = w->channels, K = w->kernel, sources = 2 * s; /* the mask: z < s only */
    const size_t ring_floats = (size_t)ring * B * C;
    for (int c = 0; c < C; c++) {
        float acc = w->b_in[s * C + c];
        for (int k = 0; k < K; k++) {
            const float *x = inputs + (size_t)((coordinate - (K - 1 - k)) & (input_ring - 1)) * B * 2;
            const float *wk = w->w_in + ((size_t)(s * C + c) * K + k) * 2 * B;
            for (int j = 0; j < sources; j++) acc += wk[j] * x[j];
        }
        h[c] = acc > 0.0f ? acc : 0.0f;
    }
    memcpy(rings + ((size_t)(at % ring) * B + s) * C, h, (size_t)C * sizeof(float));
    for (int n = 0; n < w->layers; n++) {
        const float *own = rings + n * ring_floats;
        const int d = (int)w->dilations[n];
        for (int c = 0; c < C; c++) {
            float acc = w->b_layers[((size_t)n * B + s) * C + c];
            for (int k = 0; k < K; k++) {
                const float *x = own + ((size_t)((at - d * (K - 1 - k)) % ring) * B + s) * C;
                const float *wk = w->w_layers + ((((size_t)n * B + s) * C + c) * K + k) * C;
                for (int j = 0; j < C; j++) acc += wk[j] * x[j];
            }
            layer[c] = acc > 0.0f ? acc : 0.0f;
        }
        for (int c = 0; c < C; c++) h[c] += layer[c];
        memcpy(rings + (n + 1) * ring_floats + ((size_t)(at % ring) * B + s) * C, h, (size_t)C * sizeof(float));
    }
    if (!out) return;
    for (int o = 0; o < w->features; o++) {
        const float *wo = w->w_out + ((size_t)s * w->features + o) * C;
        float acc = w->b_out[s * w->features + o];
        for (int c = 0; c < C; c++) acc += wo[c] * h[c];
        out[o] = acc;
    }
}

static int subscale_run(const subscale_weights *w, const subscale_job *job) {
    const wavernn_weights *core = &w->core;
    const int U = job->utterances, T = job->samples, B = w->factor, F = w->horizon, D = w->features;
    const int C = w->channels, S = U * B, width = job->logits_width, Kc = core->coarse_classes, H = core->hidden;
    const int Kf = core->fine_classes, fine_bits = core->fine_bits;
    const int N = (T + B - 1) / B, ring = job->layer_ring, input_ring = job->input_ring;
    const size_t x_floats = (size_t)padded_cols(D, w->w_cond.dtype) + PACK_ROWS;
    const size_t y_floats = (size_t)padded_rows(w->w_cond.rows), per_stream = stream_floats(core);
    const size_t input_floats = (size_t)input_ring * B * 2, ring_floats = (size_t)(w->layers + 1) * ring * B * C;
    const float coarse_step = (float)(2.0 / (Kc - 1)), fine_step = (float)(2.0 / (Kf - 1));
    float *arena = (float *)calloc((size_t)S * (per_stream + x_floats + y_floats) + 2 * (size_t)C, sizeof(float));
    float **all = (float **)calloc((size_t)S * 7, sizeof(float *)), **running = (float **)calloc((size_t)S * 9, sizeof(float *));
    int64_t *ints = (int64_t *)calloc((size_t)S * 3 + 1, sizeof(int64_t));
    sample_io *io = (sample_io *)calloc((size_t)S, sizeof(sample_io));
    double *cdf = (double *)calloc((size_t)(Kc > Kf ? Kc : Kf), sizeof(double));
    if (!arena || !all || !running || !ints || !io || !cdf) {
        free(arena), free(all), free(running), free(ints), free(io), free(cdf);
        return -1;
    }
    const stream_vectors state = stream_vectors_at(all, S), step = stream_vectors_at(running, S);
    float **xs = running + 7 * S, **ys = running + 8 * S;
    float *x = arena + (size_t)S * per_stream, *y = x + (size_t)S * x_floats, *h = y + (size_t)S * y_floats, *layer = h + C;
    /* Per running slot k of a step: its stream's last class gathered, the coarse draw, and which
     * stream it is (-1 - stream for a position past the end of the signal, which runs like the
     * others but whose sample is dropped). */
    int64_t *previous = job->previous, *step_previous = ints, *coarse = ints + S, *stream_of = ints + 2 * S;
    int64_t *discard = ints + 3 * S;                 /* where a dropped sample goes */
    static const float half_noise[2] = {0.5f, 0.5f}; /* its draws */
    static const float one_tap = 1.0f;               /* the conditioning is per sample: one tap, weight 1 */
    int status = 0;
    for (int s = 0; s < S; s++) {
        place_stream(core, arena + (size_t)s * per_stream, &state, s);
        memcpy(state.h[s], job->hidden + (size_t)s * H, (size_t)H * sizeof(float));
    }
    for (int t = job->first; t < job->last && !status; t++) {
        int count = 0;
        for (int u = 0; u < U; u++) { /* position t's slot: nothing has written it yet at this step */
            memset(job->inputs + (size_t)u * input_floats + (size_t)(t & (input_ring - 1)) * B * 2, 0,
                   (size_t)B * 2 * sizeof(float));
        }
        for (int u = 0; u < U && !status; u++) {
            const float *utterance_inputs = job->inputs + (size_t)u * input_floats;
            float *utterance_rings = job->rings + (size_t)u * ring_floats;
            for (int s = 0; s < B; s++) {
                const int position = t - s * (F + 1), coordinate = position + F;
                if (coordinate < 0 || coordinate >= N + F) continue;
                const int stream = u * B + s, live = position >= 0 && position < N;
                float *features = x + (size_t)stream * x_floats;
                context_column(w, utterance_inputs, input_ring, utterance_rings, ring, s, coordinate,
                               live ? features : NULL, h, layer);
                if (!live) continue;
                const int index = B * position + s, in_signal = index < T;
                const int row = (in_signal ? index : T - 1) - job->origin; /* dropped: the last sample's */
                if (row < 0 || row >= job->stride) {
                    status = -2;
                    break;
                }
                const float *mel = job->features + ((size_t)u * job->stride + row) * D;
                for (int o = 0; o < D; o++) features[o] += mel[o];
                const size_t at = (size_t)u * job->stride + row;
                xs[count] = features, ys[count] = y + (size_t)stream * y_floats;
                io[count].cond = ys[count];
                io[count].noise = in_signal ? job->noise + 2 * at : half_noise;
                io[count].forced = in_signal && job->forced ? job->forced + at : NULL;
                io[count].sample = in_signal ? job->out + at : discard;
                io[count].logits = in_signal && job->logits ? job->logits + 2 * at * width : NULL;
                stream_of[count] = in_signal ? stream : -1 - stream;
                count++;
            }
        }
        if (!count || status) continue;
        matvec(&w->w_cond, (const float *const *)xs, ys, count);
        for (int k = 0; k < count; k++) {
            const int64_t stream = stream_of[k] >= 0 ? stream_of[k] : -1 - stream_of[k];
            step.h[k] = state.h[stream], step.h_new[k] = state.h_new[stream], step.gh[k] = state.gh[stream];
            step.o[k] = state.o[stream], step.coarse_logits[k] = state.coarse_logits[stream];
            step.fine_logits[k] = state.fine_logits[stream];
            step_previous[k] = previous[stream];
        }
        wavernn_sample(core, count, &step, step_previous, coarse, io, &one_tap, width, job->temperature, cdf);
        for (int k = 0; k < count; k++) {
            const int64_t stream = stream_of[k] >= 0 ? stream_of[k] : -1 - stream_of[k];
            state.h[stream] = step.h[k], state.h_new[stream] = step.h_new[k];
            previous[stream] = step_previous[k];
            if (stream_of[k] < 0) continue; /* past the end: the context reads zeros there */
            const int u = (int)(stream / B), s = (int)(stream % B), position = t - s * (F + 1);
            float *value = job->inputs + (size_t)u * input_floats + ((size_t)(position & (input_ring - 1)) * B + s) * 2;
            value[0] = (float)(step_previous[k] >> fine_bits) * coarse_step - 1.0f;
            value[1] = (float)(step_previous[k] & (Kf - 1)) * fine_step - 1.0f;
        }
    }
    for (int s = 0; s < S; s++) memcpy(job->hidden + (size_t)s * H, state.h[s], (size_t)H * sizeof(float));
    free(arena), free(all), free(running), free(ints), free(io), free(cdf);
    return status;
}
