/* vocoders._native: compiled sampling kernels with run-time instruction-set dispatch.
 *
 * Layout
 *   kernels.h            the kernel table (one function pointer per kernel) and the data layouts
 *   simd.h               16-lane vector types and float math (GCC/clang vector extensions)
 *   kern_matvec.h        dense kernels: read-bandwidth probe, packed matrix-vector products
 *   kern_wavernn.h       the WaveRNN sampling loop
 *   kern_wavenet.h       the WaveNet sampling loop (ring buffers per layer)
 *   kern_sparse.h        block-sparse products, the fast draw, the Sparse WaveRNN loop
 *   kern_subscale.h      the Subscale WaveRNN loop (context CNN, W_cond and the core per step)
 *   kernels_<isa>.c      compile the kern_*.h bodies for one instruction set (portable, avx2, avx512)
 *   module.c             this file: CPU detection, table choice, Python bindings
 *
 * The Python side (vocoders/native.py, vocoders/engines/cpu/packing.py, vocoders/engines/cpu/engine.py) owns
 * every tensor, checks dtypes, shapes and contiguity, and passes raw addresses (tensor.data_ptr())
 * as integers; these functions trust them, so call them only through those wrappers. The GIL is
 * released while a kernel runs, so Python threads can run several at once (one per worker).
 *
 * Adding a kernel (e.g. a block-sparse product)
 *   1. Write its body once in a kern_<name>.h (static functions, vectors from simd.h), and include
 *      it in every kernels_<isa>.c after the others.
 *   2. Add its function pointer to kernel_table in kernels.h and to the three table initialisers.
 *   3. Bind it below: parse the arguments, pick the table with table_for(isa), release the GIL
 *      around the call, and list it in native_methods.
 *   4. In Python, wrap it beside the others with its checks, and test it against a PyTorch
 *      reference for every name in vocoders._native.isas() (tests/engines/cpu/test_native.py shows how).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kernels.h"

/* Instruction sets this CPU (and OS) can run, best first. */
static int supported_tables(const kernel_table **out) {
    int n = 0;
#ifdef VOCODERS_X86
#if defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        out[n++] = &kernels_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) out[n++] = &kernels_avx2;
#endif
#endif
    out[n++] = &kernels_portable;
    return n;
}

/* The table named `isa` ("auto" or NULL: the best supported); sets a Python error when unsupported. */
static const kernel_table *table_for(const char *isa) {
    const kernel_table *tables[4];
    int n = supported_tables(tables);
    if (isa == NULL || strcmp(isa, "auto") == 0 || isa[0] == '\0') return tables[0];
    for (int i = 0; i < n; i++)
        if (strcmp(tables[i]->name, isa) == 0) return tables[i];
    PyErr_Format(PyExc_ValueError, "instruction set '%s' is not available on this CPU", isa);
    return NULL;
}

static PyObject *native_isas(PyObject *self, PyObject *args) {
    const kernel_table *tables[4];
    int n = supported_tables(tables);
    PyObject *names = PyTuple_New(n);
    if (!names) return NULL;
    for (int i = 0; i < n; i++) PyTuple_SET_ITEM(names, i, PyUnicode_FromString(tables[i]->name));
    return names;
}

static PyObject *native_read_sum(PyObject *self, PyObject *args) {
    unsigned long long data;
    Py_ssize_t count;
    int reps;
    const char *isa = NULL;
    if (!PyArg_ParseTuple(args, "Kni|z", &data, &count, &reps, &isa)) return NULL;
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    double total;
    Py_BEGIN_ALLOW_THREADS total = table->read_sum((const float *)(uintptr_t)data, (size_t)count, reps);
    Py_END_ALLOW_THREADS return PyFloat_FromDouble(total);
}

/* (data, scale, bias, rows, cols, dtype) with addresses as integers (0 = NULL). */
static int parse_matrix(PyObject *spec, packed_matrix *m) {
    unsigned long long data, scale, bias;
    if (!PyArg_ParseTuple(spec, "KKKiii", &data, &scale, &bias, &m->rows, &m->cols, &m->dtype)) return 0;
    if (m->dtype < WEIGHT_F32 || m->dtype > WEIGHT_I8 || m->rows < 1 || m->cols < 1) {
        PyErr_SetString(PyExc_ValueError, "packed matrix: bad dtype or shape");
        return 0;
    }
    m->data = (const void *)(uintptr_t)data;
    m->scale = (const float *)(uintptr_t)scale;
    m->bias = (const float *)(uintptr_t)bias;
    return 1;
}

static PyObject *native_matvec(PyObject *self, PyObject *args) {
    PyObject *spec;
    unsigned long long x, y;
    Py_ssize_t x_stride, y_stride;
    int streams;
    const char *isa = NULL;
    packed_matrix m;
    if (!PyArg_ParseTuple(args, "OKnKni|z", &spec, &x, &x_stride, &y, &y_stride, &streams, &isa)) return NULL;
    if (!PyTuple_Check(spec) || !parse_matrix(spec, &m)) return NULL;
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    if (streams < 1 || streams > 64) return PyErr_Format(PyExc_ValueError, "streams must be in 1..64, got %d", streams);
    const float *xs[64];
    float *ys[64];
    for (int s = 0; s < streams; s++) {
        xs[s] = (const float *)(uintptr_t)x + s * x_stride;
        ys[s] = (float *)(uintptr_t)y + s * y_stride;
    }
    Py_BEGIN_ALLOW_THREADS table->matvec(&m, xs, ys, streams);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

/* The weights tuple of wavernn_run (sizes, R, O1-O4 specs, vector addresses) -> w. */
static int parse_wavernn(PyObject *spec, wavernn_weights *w) {
    PyObject *R, *O1, *O2, *O3, *O4;
    unsigned long long bias_ih, c_prev, f_prev, c_now, upsample;
    if (!PyTuple_Check(spec) ||
        !PyArg_ParseTuple(spec, "iiiiiiiiO!O!O!O!O!KKKKK", &w->hidden, &w->half, &w->out_hidden, &w->coarse_classes,
                          &w->fine_classes, &w->fine_bits, &w->taps, &w->hop, &PyTuple_Type, &R, &PyTuple_Type, &O1,
                          &PyTuple_Type, &O2, &PyTuple_Type, &O3, &PyTuple_Type, &O4, &bias_ih, &c_prev, &f_prev,
                          &c_now, &upsample))
        return 0;
    if (!parse_matrix(R, &w->R) || !parse_matrix(O1, &w->O1) || !parse_matrix(O2, &w->O2) ||
        !parse_matrix(O3, &w->O3) || !parse_matrix(O4, &w->O4))
        return 0;
    if (w->hop < 1 || w->taps < 1) {
        PyErr_SetString(PyExc_ValueError, "wavernn weights: hop and taps must be >= 1");
        return 0;
    }
    w->bias_ih = (const float *)(uintptr_t)bias_ih;
    w->w_c_prev = (const float *)(uintptr_t)c_prev;
    w->w_f_prev = (const float *)(uintptr_t)f_prev;
    w->w_c_now = (const float *)(uintptr_t)c_now;
    w->upsample = (const float *)(uintptr_t)upsample;
    return 1;
}

static PyObject *native_wavernn_run(PyObject *self, PyObject *args) {
    PyObject *spec;
    unsigned long long hidden, previous, cond, noise, forced, samples, logits;
    const char *isa = NULL;
    wavernn_weights w;
    wavernn_job job;
    if (!PyArg_ParseTuple(args, "O(iiiiiiKKKKKKKd)|z", &spec, &job.streams, &job.steps, &job.first, &job.last,
                          &job.cond_frames, &job.logits_width, &hidden, &previous, &cond, &noise, &forced, &samples,
                          &logits, &job.temperature, &isa) ||
        !parse_wavernn(spec, &w))
        return NULL;
    if (job.streams < 1 || job.first < 0 || job.last < job.first || job.last > job.steps ||
        job.steps > (job.cond_frames - w.taps + 1) * w.hop)
        return PyErr_Format(PyExc_ValueError, "wavernn_run: inconsistent streams, steps, frames or taps");
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    job.hidden = (float *)(uintptr_t)hidden;
    job.previous = (int64_t *)(uintptr_t)previous;
    job.cond = (const float *)(uintptr_t)cond;
    job.noise = (const float *)(uintptr_t)noise;
    job.forced = (const int64_t *)(uintptr_t)forced;
    job.samples = (int64_t *)(uintptr_t)samples;
    job.logits = (float *)(uintptr_t)logits;
    int status;
    Py_BEGIN_ALLOW_THREADS status = table->wavernn_run(&w, &job);
    Py_END_ALLOW_THREADS if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *native_subscale_run(PyObject *self, PyObject *args) {
    PyObject *core, *w_cond;
    unsigned long long dilations, w_in, b_in, w_layers, b_layers, w_out, b_out, features, noise, forced, out, logits;
    unsigned long long hidden, previous, inputs, rings;
    const char *isa = NULL;
    subscale_weights w;
    subscale_job job;
    if (!PyArg_ParseTuple(args, "OO(iiiiiiKKKKKKK)(iiiiiiiKKKKKdiiKKKK)|z", &core, &w_cond, &w.factor, &w.horizon,
                          &w.channels, &w.kernel, &w.layers, &w.features, &dilations, &w_in, &b_in, &w_layers,
                          &b_layers, &w_out, &b_out, &job.utterances, &job.samples, &job.logits_width, &job.first,
                          &job.last, &job.origin, &job.stride, &features, &noise, &forced, &out, &logits,
                          &job.temperature, &job.input_ring, &job.layer_ring, &hidden, &previous, &inputs, &rings,
                          &isa) ||
        !parse_wavernn(core, &w.core) || !PyTuple_Check(w_cond) || !parse_matrix(w_cond, &w.w_cond))
        return NULL;
    if (w.factor < 1 || w.horizon < 0 || w.channels < 1 || w.kernel < 1 || w.layers < 0 || w.features < 1 ||
        job.utterances < 1 || job.samples < 1 || w.core.taps != 1 || w.w_cond.cols != w.features ||
        w.w_cond.rows != 3 * w.core.hidden)
        return PyErr_Format(PyExc_ValueError, "subscale_run: inconsistent sizes");
    w.dilations = (const int64_t *)(uintptr_t)dilations;
    int64_t widest = 1; /* the context layers' lookback: the layer ring must hold more coordinates */
    for (int n = 0; n < w.layers; n++) widest = w.dilations[n] > widest ? w.dilations[n] : widest;
    const int64_t lookback = (w.kernel - 1) * widest, reach = (int64_t)(w.factor - 1) * (w.horizon + 1) + w.kernel;
    if (job.first < -w.horizon || job.last < job.first || job.origin < 0 || job.stride < 1 ||
        job.layer_ring <= lookback || (job.layer_ring & (job.layer_ring - 1)) || job.input_ring < reach ||
        (job.input_ring & (job.input_ring - 1)) || !hidden || !previous || !inputs || !rings)
        return PyErr_Format(PyExc_ValueError, "subscale_run: inconsistent steps, window or state");
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    w.w_in = (const float *)(uintptr_t)w_in;
    w.b_in = (const float *)(uintptr_t)b_in;
    w.w_layers = (const float *)(uintptr_t)w_layers;
    w.b_layers = (const float *)(uintptr_t)b_layers;
    w.w_out = (const float *)(uintptr_t)w_out;
    w.b_out = (const float *)(uintptr_t)b_out;
    job.features = (const float *)(uintptr_t)features;
    job.noise = (const float *)(uintptr_t)noise;
    job.forced = (const int64_t *)(uintptr_t)forced;
    job.out = (int64_t *)(uintptr_t)out;
    job.logits = (float *)(uintptr_t)logits;
    job.hidden = (float *)(uintptr_t)hidden;
    job.previous = (int64_t *)(uintptr_t)previous;
    job.inputs = (float *)(uintptr_t)inputs;
    job.rings = (float *)(uintptr_t)rings;
    int status;
    Py_BEGIN_ALLOW_THREADS status = table->subscale_run(&w, &job);
    Py_END_ALLOW_THREADS
    if (status == -2) return PyErr_Format(PyExc_ValueError, "subscale_run: a step reads a sample outside the window");
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* (values, group_start, block_col, bias, rows, cols, block_rows, block_cols, dtype, dense), addresses as integers. */
static int parse_sparse(PyObject *spec, sparse_matrix *m) {
    unsigned long long values, group_start, block_col, bias;
    if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "KKKKiiiiii", &values, &group_start, &block_col, &bias,
                                                  &m->rows, &m->cols, &m->block_rows, &m->block_cols, &m->dtype,
                                                  &m->dense))
        return 0;
    int dtype_ok = m->dtype == WEIGHT_F32 || m->dtype == WEIGHT_BF16 || m->dtype == WEIGHT_F16;
    if (!dtype_ok || m->rows < 1 || m->cols < 1 || m->block_rows < 1 || PACK_ROWS % m->block_rows ||
        m->block_cols < 1 || m->cols % m->block_cols || (m->dense && (m->block_rows != 16 || m->block_cols != 1))) {
        PyErr_SetString(PyExc_ValueError, "sparse matrix: bad dtype, shape or block");
        return 0;
    }
    m->values = (const void *)(uintptr_t)values;
    m->group_start = (const int32_t *)(uintptr_t)group_start;
    m->block_col = (const int32_t *)(uintptr_t)block_col;
    m->bias = (const float *)(uintptr_t)bias;
    return 1;
}

static PyObject *native_sparse_matvec(PyObject *self, PyObject *args) {
    PyObject *spec;
    unsigned long long x, y, active;
    const char *isa = NULL;
    sparse_matrix m;
    if (!PyArg_ParseTuple(args, "OKKK|z", &spec, &x, &y, &active, &isa) || !parse_sparse(spec, &m)) return NULL;
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    int read;
    Py_BEGIN_ALLOW_THREADS read = table->sparse_matvec(&m, (const float *)(uintptr_t)x, (float *)(uintptr_t)y,
                                                       (int32_t *)(uintptr_t)active);
    Py_END_ALLOW_THREADS return PyLong_FromLong(read);
}

static PyObject *native_sparse_wavernn_run(PyObject *self, PyObject *args) {
    PyObject *R, *O1, *O2, *O3, *O4;
    unsigned long long bias_ih, c_prev, f_prev, c_now, upsample, hidden, previous, cond, noise, forced, samples, logits;
    const char *isa = NULL;
    sparse_wavernn_weights sw;
    wavernn_weights *w = &sw.base;
    wavernn_job job;
    memset(&sw, 0, sizeof(sw));
    if (!PyArg_ParseTuple(args, "(iiiiiiiiOOOOOKKKKK)(iiiiKKKKKKKd)|z", &w->hidden, &w->half, &w->out_hidden,
                          &w->coarse_classes, &w->fine_classes, &w->fine_bits, &w->taps, &w->hop, &R, &O1, &O2,
                          &O3, &O4, &bias_ih, &c_prev, &f_prev, &c_now, &upsample, &job.streams, &job.steps,
                          &job.cond_frames, &job.logits_width, &hidden, &previous, &cond, &noise, &forced, &samples,
                          &logits, &job.temperature, &isa))
        return NULL;
    if (!parse_sparse(R, &sw.R) || !parse_sparse(O1, &sw.O1) || !parse_sparse(O2, &sw.O2) ||
        !parse_sparse(O3, &sw.O3) || !parse_sparse(O4, &sw.O4))
        return NULL;
    if (job.streams < 1 || job.steps < 0 || w->hop < 1 || w->taps < 1 ||
        job.steps > (job.cond_frames - w->taps + 1) * w->hop)
        return PyErr_Format(PyExc_ValueError, "sparse_wavernn_run: inconsistent streams, steps, frames or taps");
    if (sw.R.rows != 3 * w->hidden || sw.R.cols != w->hidden || sw.O1.cols != w->half || sw.O3.cols != w->half ||
        sw.O1.rows != w->out_hidden || sw.O3.rows != w->out_hidden || sw.O2.cols != w->out_hidden ||
        sw.O4.cols != w->out_hidden || sw.O2.rows != w->coarse_classes || sw.O4.rows != w->fine_classes)
        return PyErr_Format(PyExc_ValueError, "sparse_wavernn_run: matrix shapes do not fit the sizes");
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    w->bias_ih = (const float *)(uintptr_t)bias_ih;
    w->w_c_prev = (const float *)(uintptr_t)c_prev;
    w->w_f_prev = (const float *)(uintptr_t)f_prev;
    w->w_c_now = (const float *)(uintptr_t)c_now;
    w->upsample = (const float *)(uintptr_t)upsample;
    if ((hidden == 0) != (previous == 0))
        return PyErr_Format(PyExc_ValueError, "sparse_wavernn_run: give both hidden and previous, or neither");
    job.hidden = (float *)(uintptr_t)hidden; /* NULL: start from zeros and silence */
    job.previous = (int64_t *)(uintptr_t)previous;
    job.cond = (const float *)(uintptr_t)cond;
    job.noise = (const float *)(uintptr_t)noise;
    job.forced = (const int64_t *)(uintptr_t)forced;
    job.samples = (int64_t *)(uintptr_t)samples;
    job.logits = (float *)(uintptr_t)logits;
    int status;
    int64_t inputs_read[2] = {0, 0};
    Py_BEGIN_ALLOW_THREADS status = table->sparse_wavernn_run(&sw, &job, inputs_read);
    Py_END_ALLOW_THREADS if (status != 0) return PyErr_NoMemory();
    return Py_BuildValue("(LL)", (long long)inputs_read[0], (long long)inputs_read[1]);
}

static PyObject *native_activation(PyObject *self, PyObject *args) {
    int kind;
    unsigned long long x, out;
    Py_ssize_t count;
    const char *isa = NULL;
    if (!PyArg_ParseTuple(args, "iKKn|z", &kind, &x, &out, &count, &isa)) return NULL;
    if (kind < 0 || kind > 2) return PyErr_Format(PyExc_ValueError, "activation kind must be 0, 1 or 2");
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    Py_BEGIN_ALLOW_THREADS table->activation(kind, (const float *)(uintptr_t)x, (float *)(uintptr_t)out, (size_t)count);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

/* A tuple of packed-matrix specs -> a malloc'ed array (NULL and a Python error on failure). */
static packed_matrix *parse_matrices(PyObject *specs, int count) {
    if (!PyTuple_Check(specs) || PyTuple_GET_SIZE(specs) != count) {
        PyErr_Format(PyExc_ValueError, "expected a tuple of %d packed matrices", count);
        return NULL;
    }
    packed_matrix *out = (packed_matrix *)calloc((size_t)count, sizeof(packed_matrix));
    if (!out) return (packed_matrix *)PyErr_NoMemory();
    for (int i = 0; i < count; i++) {
        PyObject *spec = PyTuple_GET_ITEM(specs, i);
        if (!PyTuple_Check(spec) || !parse_matrix(spec, &out[i])) {
            free(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *native_wavenet_run(PyObject *self, PyObject *args) {
    PyObject *dilated, *out, *head1, *head2;
    unsigned long long dilations, embedding, upsample, local, constant, noise, forced, samples, logits;
    unsigned long long history = 0, previous = 0;
    long long silence, start = 0;
    const char *isa = NULL;
    wavenet_weights w;
    wavenet_job job;
    if (!PyArg_ParseTuple(args, "(iiiiiiiiiLKO!O!O!O!KK)(iiiiKKKKKKd)|z(KKL)", &w.layers, &w.kernel, &w.residual,
                          &w.gate, &w.skip, &w.head, &w.classes, &w.taps, &w.hop, &silence, &dilations, &PyTuple_Type,
                          &dilated, &PyTuple_Type, &out, &PyTuple_Type, &head1, &PyTuple_Type, &head2, &embedding,
                          &upsample, &job.streams, &job.steps, &job.cond_frames, &job.logits_width, &local, &constant,
                          &noise, &forced, &samples, &logits, &job.temperature, &isa, &history, &previous, &start))
        return NULL;
    if ((history == 0) != (previous == 0) || start < 0)
        return PyErr_Format(PyExc_ValueError, "wavenet_run: the stream state needs history and previous, start >= 0");
    job.history = (float *)(uintptr_t)history;
    job.previous = (int64_t *)(uintptr_t)previous;
    job.start = start;
    if (w.layers < 1 || w.kernel < 2 || w.residual < 1 || w.gate < 2 || w.gate % 2 || w.skip < 1 || w.head < 1 ||
        w.classes < 2 || silence < 0 || silence >= w.classes || w.hop < 1 || w.taps < 1 || job.streams < 1 ||
        job.steps < 0 || job.steps > (job.cond_frames - w.taps + 1) * w.hop)
        return PyErr_Format(PyExc_ValueError, "wavenet_run: inconsistent sizes, streams, steps, frames or taps");
    if (!parse_matrix(head1, &w.head1) || !parse_matrix(head2, &w.head2)) return NULL;
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    packed_matrix *dilated_m = parse_matrices(dilated, w.layers);
    if (!dilated_m) return NULL;
    packed_matrix *out_m = parse_matrices(out, w.layers);
    if (!out_m) {
        free(dilated_m);
        return NULL;
    }
    w.silence = silence;
    w.dilations = (const int64_t *)(uintptr_t)dilations;
    w.dilated = dilated_m;
    w.out = out_m;
    w.embedding = (const float *)(uintptr_t)embedding;
    w.upsample = (const float *)(uintptr_t)upsample;
    job.local = (const float *)(uintptr_t)local;
    job.constant = (const float *)(uintptr_t)constant;
    job.noise = (const float *)(uintptr_t)noise;
    job.forced = (const int64_t *)(uintptr_t)forced;
    job.samples = (int64_t *)(uintptr_t)samples;
    job.logits = (float *)(uintptr_t)logits;
    int status;
    Py_BEGIN_ALLOW_THREADS status = table->wavenet_run(&w, &job);
    Py_END_ALLOW_THREADS free(dilated_m);
    free(out_m);
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}


/* (n_mels, kernel, channels, conv_in spec, (conv1 spec, conv2 spec) per block) -> w. */
static int parse_cond(PyObject *spec, cond_weights *w) {
    PyObject *conv_in, *blocks;
    if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "iiiO!O!", &w->n_mels, &w->kernel, &w->channels, &PyTuple_Type,
                                                  &conv_in, &PyTuple_Type, &blocks))
        return 0;
    Py_ssize_t count = PyTuple_GET_SIZE(blocks);
    if (count % 2 || count / 2 > MAX_COND_BLOCKS || w->n_mels < 1 || w->kernel < 1 || w->channels < 1) {
        PyErr_Format(PyExc_ValueError, "cond_net: bad sizes or more than %d blocks", MAX_COND_BLOCKS);
        return 0;
    }
    w->blocks = (int)(count / 2);
    if (!parse_matrix(conv_in, &w->conv_in)) return 0;
    for (int k = 0; k < w->blocks; k++)
        if (!parse_matrix(PyTuple_GET_ITEM(blocks, 2 * k), &w->conv1[k]) ||
            !parse_matrix(PyTuple_GET_ITEM(blocks, 2 * k + 1), &w->conv2[k]))
            return 0;
    int ok = w->conv_in.rows == w->channels && w->conv_in.cols == w->n_mels * w->kernel &&
             w->conv_in.dtype == WEIGHT_F32;
    for (int k = 0; k < w->blocks; k++)
        ok = ok && w->conv1[k].rows == w->channels && w->conv1[k].cols == w->channels && w->conv1[k].dtype == WEIGHT_F32 &&
             w->conv2[k].rows == w->channels && w->conv2[k].cols == w->channels && w->conv2[k].dtype == WEIGHT_F32;
    if (!ok) PyErr_SetString(PyExc_ValueError, "cond_net: matrix shapes do not fit the sizes (float32 only)");
    return ok;
}

static PyObject *native_cond_net(PyObject *self, PyObject *args) {
    PyObject *spec;
    unsigned long long mel, out;
    Py_ssize_t batch_stride, band_stride;
    const char *isa = NULL;
    cond_weights w;
    cond_job job;
    if (!PyArg_ParseTuple(args, "OKnniiK|z", &spec, &mel, &batch_stride, &band_stride, &job.batch, &job.frames, &out,
                          &isa))
        return NULL;
    if (!parse_cond(spec, &w)) return NULL;
    if (job.batch < 1 || job.frames < 1) return PyErr_Format(PyExc_ValueError, "cond_net: batch and frames must be >= 1");
    const kernel_table *table = table_for(isa);
    if (!table) return NULL;
    job.mel = (const float *)(uintptr_t)mel;
    job.mel_batch_stride = batch_stride;
    job.mel_band_stride = band_stride;
    job.out = (float *)(uintptr_t)out;
    int status;
    Py_BEGIN_ALLOW_THREADS status = table->cond_net(&w, &job);
    Py_END_ALLOW_THREADS if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef native_methods[] = {
    {"isas", native_isas, METH_NOARGS, "isas() -> instruction sets this CPU runs, best first."},
    {"read_sum", native_read_sum, METH_VARARGS,
     "read_sum(address, count, reps, isa=None) -> sum of count float32 read reps times (bandwidth probe)."},
    {"matvec", native_matvec, METH_VARARGS,
     "matvec(matrix, x, x_stride, y, y_stride, streams, isa=None): y[s] = W x[s] for a packed matrix."},
    {"wavernn_run", native_wavernn_run, METH_VARARGS,
     "wavernn_run(weights, job, isa=None): the WaveRNN sampling loop (see vocoders/engines/cpu/engine.py)."},
    {"subscale_run", native_subscale_run, METH_VARARGS,
     "subscale_run(core, w_cond, context, job, isa=None): steps of the Subscale WaveRNN loop (see engines/cpu/subscale.py)."},
    {"sparse_matvec", native_sparse_matvec, METH_VARARGS,
     "sparse_matvec(matrix, x, y, active, isa=None) -> inputs read: y = W x, block-sparse (engines/cpu/sparse_packing.py)."},
    {"sparse_wavernn_run", native_sparse_wavernn_run, METH_VARARGS,
     "sparse_wavernn_run(weights, job, isa=None) -> (O2 inputs read, O4 inputs read): the Sparse WaveRNN loop."},
    {"activation", native_activation, METH_VARARGS,
     "activation(kind, x, out, count, isa=None): sigmoid (0), tanh (1) or exp (2) as the loops compute them."},
    {"wavenet_run", native_wavenet_run, METH_VARARGS,
     "wavenet_run(weights, job, isa=None, state=None): the WaveNet sampling loop; state = (history, previous, start) (see vocoders/engines/cpu/wavenet.py)."},
    {"cond_net", native_cond_net, METH_VARARGS,
     "cond_net(weights, mel, batch_stride, band_stride, batch, frames, out, isa=None): the mel conditioning network "
     "(see vocoders/engines/cpu/conditioning.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native", "Compiled sampling kernels of vocoders (see vocoders/native.py).", -1,
    native_methods,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
