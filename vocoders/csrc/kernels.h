/* The kernel table of vocoders._native: one table per instruction set, chosen at run time.
 *
 * Every kernel is written once (the kern_*.h bodies, in GCC/clang vector extensions) and compiled
 * once per instruction set by kernels_<isa>.c, which sets the target and names the table. module.c
 * picks the best table the CPU supports (or the one asked for) and binds the kernels to Python.
 */
#ifndef VOCODERS_KERNELS_H
#define VOCODERS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Rows of a packed block: 16 float outputs, NV = 16 / VL vectors of the target (simd.h). */
#define PACK_ROWS 16
/* Streams one matrix pass serves; more streams take more passes over the weights. */
#define MAX_PASS_STREAMS 4

enum weight_dtype { WEIGHT_F32 = 0, WEIGHT_BF16 = 1, WEIGHT_I8 = 2, WEIGHT_F16 = 3 };

/* A dense matrix packed for matrix-vector products (the Python side packs it, see engines/cpu/packing.py).
 * Rows are padded to a multiple of 16 and cut into blocks of 16; within a block the columns are
 * stored in groups of G = 1 (float32), 2 (bfloat16) or 4 (int8) columns, 64 bytes per group:
 *     data[block][cols_padded / G][16 rows][G]
 * so one 64-byte load gives the G columns of 16 rows, the 16 outputs of a block accumulate in one
 * vector and the weights stream in order. cols_padded is a multiple of G (zero columns).
 * int8 rows carry a float32 scale (w = q * scale[row]); bias, when not NULL, is added to the output.
 * scale and bias have rows_padded entries. */
typedef struct {
    const void *data;
    const float *scale;
    const float *bias;
    int rows, cols, dtype;
} packed_matrix;

static inline int padded_rows(int rows) { return (rows + PACK_ROWS - 1) / PACK_ROWS * PACK_ROWS; }
static inline int group_columns(int dtype) { return dtype == WEIGHT_I8 ? 4 : dtype == WEIGHT_BF16 ? 2 : 1; }
static inline int padded_cols(int cols, int dtype) {
    int g = group_columns(dtype);
    return (cols + g - 1) / g * g;
}

/* Dual-softmax WaveRNN weights (see vocoders/models/wavernn.py for the equations and layout). */
typedef struct {
    int hidden, half, out_hidden, coarse_classes, fine_classes, fine_bits, taps, hop;
    packed_matrix R;                       /* gru_weight_hh [3H, H], bias gru_bias_hh */
    packed_matrix O1, O2, O3, O4;          /* output layers with their biases */
    const float *bias_ih;                  /* [3H] */
    const float *w_c_prev, *w_f_prev;      /* [3H] input columns of the previous coarse and fine values */
    const float *w_c_now;                  /* [3H] input column of the current coarse value (0 on coarse rows) */
    const float *upsample;                 /* [hop][taps] the upsampler's weights */
} wavernn_weights;

/* One call: `streams` independent streams stepped together through samples [first, last) of
 * sequences `steps` long. The recurrent state enters and leaves through `hidden` and `previous`,
 * so a long sequence can run in chunks (the caller checks for interrupts between them). */
typedef struct {
    int streams, steps, first, last, cond_frames, logits_width;
    float *hidden;          /* [streams][H] in/out (zeros before the first sample) */
    int64_t *previous;      /* [streams] in/out: the last sample class (silence before the first) */
    const float *cond;      /* [streams][cond_frames][3H]: W_cond applied at frame rate */
    const float *noise;     /* [streams][steps][2] uniform draws (coarse, fine) */
    const int64_t *forced;  /* [streams][steps] classes fed back (teacher forcing) or NULL */
    int64_t *samples;       /* [streams][steps] out */
    float *logits;          /* [streams][steps][2][logits_width] out, or NULL */
    double temperature;
} wavernn_job;

/* A block-sparse matrix (the Python side packs it, see engines/cpu/sparse_packing.py). Rows pad to a
 * multiple of 16 and are cut into groups of block_rows (which divides 16); each group is a run of
 * blocks of block_rows x block_cols weights, block b starting at column block_col[b] and stored
 * column by column: values[b][block_cols][block_rows], float32, bfloat16 or float16.
 * group_start[g] .. group_start[g + 1] are group g's blocks. dense = 1: a dense matrix stored
 * column-major, values[cols][rows padded] (block_rows 16, block_cols 1, group_start and block_col
 * unused), multiplied over the non-zero inputs only.
 * bias, when not NULL, has rows_padded entries. */
typedef struct {
    const void *values;
    const int32_t *group_start;
    const int32_t *block_col;
    const float *bias;
    int rows, cols, block_rows, block_cols, dtype, dense;
} sparse_matrix;

/* Sparse WaveRNN: the dense loop's vectors and sizes (its packed matrices unused) and the five
 * matrices in block-sparse form. */
typedef struct {
    wavernn_weights base;
    sparse_matrix R, O1, O2, O3, O4;
} sparse_wavernn_weights;

/* WaveNet weights (see vocoders/models/wavenet.py and vocoders/engines/cpu/wavenet.py). */
typedef struct {
    int layers, kernel, residual, gate, skip, head, classes, taps, hop;
    int64_t silence;                   /* class fed back before the first sample */
    const int64_t *dilations;          /* [layers] */
    const packed_matrix *dilated;      /* [layers]: [G, kernel * R], columns tap-major (oldest tap first), no bias */
    const packed_matrix *out;          /* [layers]: [R + S, G / 2], residual rows then skip rows, with bias */
    packed_matrix head1, head2;        /* [H, S] and [classes, H], with biases */
    const float *embedding;            /* [classes][R] */
    const float *upsample;             /* [hop][taps] the upsampler's weights */
} wavenet_weights;

/* Subscale WaveRNN (see vocoders/models/subscale.py and subscale_context.py): the core, W_cond, and
 * the context CNN's weights laid out per sub-tensor (reader) s. */
typedef struct {
    wavernn_weights core;     /* taps 1: the conditioning it reads is per sample, W_cond applied */
    packed_matrix w_cond;     /* [3H, D] */
    int factor, horizon, channels, kernel, layers, features; /* B, F, C, K, dilated layers, D */
    const int64_t *dilations; /* [layers] */
    const float *w_in;        /* [B][C][K][2B] masked input convolution: reader, channel, tap, (source, value) */
    const float *b_in;        /* [B][C] */
    const float *w_layers;    /* [layers][B][C][K][C]: layer, sub-tensor, output channel, tap, input channel */
    const float *b_layers;    /* [layers][B][C] */
    const float *w_out;       /* [B][D][C] */
    const float *b_out;       /* [B][D] */
} subscale_weights;

/* One call: steps [first, last) of the staggered order of `utterances` utterances (step -F starts
 * one; the last step of a whole one is N + (B - 1)(F + 1) - 1, N = ceil(samples / B)). `samples` is
 * where the signal ends as far as this call knows: a position past it runs but its sample is dropped,
 * and the context reads zeros there. A stream passes the samples that have arrived and stops before
 * the first step that would make a sample past them, so no step sees an end that is not there yet.
 * The per-sample arrays hold samples [origin, origin + stride) of each utterance, `stride` apart;
 * the loop's state enters and leaves through hidden, previous, inputs and rings, so an utterance can
 * run in pieces (zeros and silence before step -F). */
typedef struct {
    int utterances, samples, logits_width;
    int first, last;         /* steps of the order to run */
    int origin, stride;      /* the window of samples the arrays below hold, per utterance */
    const float *features;   /* [utterances][stride][D] upsampled conditioning (before the context is added) */
    const float *noise;      /* [utterances][stride][2] uniform draws */
    const int64_t *forced;   /* [utterances][stride] classes fed back (teacher forcing), or NULL */
    int64_t *out;            /* [utterances][stride] classes out */
    float *logits;           /* [utterances][stride][2][logits_width] out, or NULL */
    double temperature;
    int input_ring, layer_ring; /* powers of two: coordinates the two kinds of ring hold */
    float *hidden;           /* [utterances * B][H] the core's state, in/out (zeros at the start) */
    int64_t *previous;       /* [utterances * B] each sub-tensor's last class, in/out (silence at the start) */
    float *inputs;           /* [utterances][input_ring][B][2] the samples' context values by position, in/out */
    float *rings;            /* [utterances][layers + 1][layer_ring][B][C] the context layers' outputs, in/out */
} subscale_job;

/* One call: `streams` independent streams stepped together for `steps` samples. */
typedef struct {
    int streams, steps, cond_frames, logits_width;
    const float *local;     /* [streams][cond_frames][layers * G]: every layer's W_cond at frame rate */
    const float *constant;  /* [streams][layers * G]: dilated bias + speaker projection */
    const float *noise;     /* [streams][steps] uniform draws */
    const int64_t *forced;  /* [streams][steps] classes fed back (teacher forcing) or NULL */
    int64_t *samples;       /* [streams][steps] out */
    float *logits;          /* [streams][steps][logits_width] out, or NULL */
    double temperature;
    /* Streaming: the ring buffers and last sample carried between calls, or NULL (zeros, silence).
     * history [streams][sum over layers of (kernel - 1) * dilation][residual] in/out; previous
     * [streams] in/out; `start` is the time of this call's first sample, which places it in the rings. */
    float *history;
    int64_t *previous;
    int64_t start;
} wavenet_job;

/* The mel conditioning network (kern_cond.h): conv_in [channels, n_mels * kernel] and the blocks'
 * conv1 and conv2 [channels, channels], float32 with their biases. */
#define MAX_COND_BLOCKS 8
typedef struct {
    int n_mels, kernel, channels, blocks;
    packed_matrix conv_in, conv1[MAX_COND_BLOCKS], conv2[MAX_COND_BLOCKS];
} cond_weights;

/* `frames` output frames of `batch` streams; band m of stream b is mel + b * mel_batch_stride +
 * m * mel_band_stride, frame + kernel - 1 samples long from the first output frame on. */
typedef struct {
    int batch, frames;
    const float *mel;
    ptrdiff_t mel_batch_stride, mel_band_stride;
    float *out; /* [batch][frames][channels] */
} cond_job;

typedef struct {
    const char *name;
    /* Sum of `count` floats read `reps` times (the benchmark's read-bandwidth probe). */
    double (*read_sum)(const float *data, size_t count, int reps);
    /* y[s] = W x[s] (+ bias) for s < streams; x[s] has cols_padded entries, y[s] rows_padded. */
    void (*matvec)(const packed_matrix *w, const float *const *x, float *const *y, int streams);
    /* Returns 0, or -1 when scratch memory could not be allocated. */
    int (*wavernn_run)(const wavernn_weights *w, const wavernn_job *job);
    /* y = W x (+ bias) for a block-sparse matrix; `active` is scratch for W's cols int32 values.
     * Returns the inputs read (a dense matrix skips the zero ones). */
    int (*sparse_matvec)(const sparse_matrix *m, const float *x, float *y, int32_t *active);
    /* The WaveRNN loop over block-sparse matrices (streams one after another); adds the inputs O2
     * and O4 read to inputs_read[0..1]. 0, or -1: no memory. */
    int (*sparse_wavernn_run)(const sparse_wavernn_weights *w, const wavernn_job *job, int64_t *inputs_read);
    /* out[i] = sigmoid (kind 0), tanh (1) or exp (2) of x[i] as the loops compute them (for tests). */
    void (*activation)(int kind, const float *x, float *out, size_t count);
    int (*wavenet_run)(const wavenet_weights *w, const wavenet_job *job);
    /* The Subscale WaveRNN loop over a range of steps. 0, -1: no memory, -2: a sample outside the window. */
    int (*subscale_run)(const subscale_weights *w, const subscale_job *job);
    /* The conditioning network on a mel's frames. 0, or -1: no memory. */
    int (*cond_net)(const cond_weights *w, const cond_job *job);
} kernel_table;

extern const kernel_table kernels_portable;
#if defined(__x86_64__) || defined(_M_X64)
#define VOCODERS_X86 1
extern const kernel_table kernels_avx2;
extern const kernel_table kernels_avx512;
#endif

#endif
