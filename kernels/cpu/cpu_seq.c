/* cpu_seq.c: layernorm, attention, mean pooling and L2 normalisation of the CPU backend
 * (see ops.h). Each op splits its rows (attention: its (sample, head) pairs, mean
 * pooling: its samples) across the backend's thread pool (cpu_pool.h).
 *
 * Attention runs per (sample, head) as sgemm calls on strided views of q, k and v (no
 * copies): scores[rows, keys] = q k^T / sqrt(head_dim) for a block of query rows,
 * exp(score - row max) over the unmasked keys, then y = exps v written straight into
 * the head's columns of y (ldc = hidden), each row then scaled by 1 / its sum of exps
 * (the softmax normalised after the GEMM: head_dim products a row instead of keys). Keys after a
 * sample's last token are never computed (right padding, the usual case, costs nothing); masked
 * keys before it get -inf before the softmax, so weight 0. The block keeps each GEMM at most
 * ATTN_GEMM_MNK multiply-adds (but ATTN_MIN_ROWS rows): OpenBLAS runs such a GEMM on
 * the calling thread, so the pool's threads do not queue on OpenBLAS's own, and a
 * block's scores stay in cache for the softmax. Each part of the job has its own
 * score buffer (block x (seq + 1) floats), allocated per call.
 *
 * Layernorm computes its mean and variance in double (two passes, no cancellation);
 * mean pooling adds the weighted token rows in float, a vectorisable row loop; L2
 * normalisation sums each row's squares in double (no overflow for any float input).
 */
#include "cpu_internal.h"
#include "cpu_vmath.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS 0.3 runs a GEMM on the calling thread when m n k <= 65536 * 4
 * (GEMM_MULTITHREAD_THRESHOLD); attention's GEMMs stay under it. */
#define ATTN_GEMM_MNK ((size_t)65536 * 4)
/* Fewest query rows in one GEMM (long sequences: fewer makes GEMMs too thin). */
#define ATTN_MIN_ROWS 32u
/* Least multiply-adds in one part of an attention job. */
#define ATTN_GRAIN_MADDS ((size_t)1 << 20)

/* ------------------------------------------------------------------------------------ */
/* layernorm, L2 normalisation: items are rows */

typedef struct rows_job {
    const float *x, *gamma, *beta;
    float *y;
    size_t cols;
    float eps;
} rows_job;

static void layernorm_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const rows_job *j = arg;
    const size_t cols = j->cols;
    for (size_t r = begin; r < end; r++) {
        const float *xr = j->x + r * cols;
        float *yr = j->y + r * cols;
        const double mean = cpu_vmath_sum(xr, cols) / (double)cols;
        const double sq = cpu_vmath_sq_dev(xr, cols, mean);
        const float inv = (float)(1.0 / sqrt(sq / (double)cols + (double)j->eps));
        const float m = (float)mean;
        if (j->gamma != NULL && j->beta != NULL) { /* the usual case: one plain loop */
            for (size_t c = 0; c < cols; c++) {
                yr[c] = (xr[c] - m) * inv * j->gamma[c] + j->beta[c];
            }
            continue;
        }
        for (size_t c = 0; c < cols; c++) {
            const float g = j->gamma != NULL ? j->gamma[c] : 1.0f;
            const float b = j->beta != NULL ? j->beta[c] : 0.0f;
            yr[c] = (xr[c] - m) * inv * g + b;
        }
    }
}

ps_status cpu_layernorm(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                        const float *beta, float eps, float *y) {
    rows_job j = {.x = x, .gamma = gamma, .beta = beta, .y = y, .cols = cols, .eps = eps};
    cpu_pool_run(exec, rows, cpu_rows_grain(cols, CPU_GRAIN_CHEAP), layernorm_part, &j);
    return PS_STATUS_OK;
}

static void l2_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const rows_job *j = arg;
    for (size_t r = begin; r < end; r++) {
        const float *xr = j->x + r * j->cols;
        float *yr = j->y + r * j->cols;
        double sq = 0.0;
        for (size_t c = 0; c < j->cols; c++) {
            sq += (double)xr[c] * xr[c];
        }
        const double norm = sqrt(sq);
        const float inv = (float)(1.0 / (norm > (double)j->eps ? norm : (double)j->eps));
        for (size_t c = 0; c < j->cols; c++) {
            yr[c] = xr[c] * inv;
        }
    }
}

ps_status cpu_l2_normalize(void *exec, const float *x, size_t rows, size_t cols, float eps,
                           float *y) {
    rows_job j = {.x = x, .y = y, .cols = cols, .eps = eps};
    cpu_pool_run(exec, rows, cpu_rows_grain(cols, CPU_GRAIN_CHEAP), l2_part, &j);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* attention: items are (sample, head) pairs, sample-major */

typedef struct attn_job {
    const kernels_attention_shape *c;
    const float *q, *k, *v, *mask;
    float *y;
    float scale;    /* 1 / sqrt(head_dim) */
    size_t block;   /* query rows per GEMM */
    float *scratch; /* block * (seq + 1) floats per part: scores, then 1 / row sums */
} attn_job;

/* Keys of sample mb (mask row, or NULL) up to its last token. */
static size_t attn_keys(const float *mb, size_t seq) {
    size_t keys = seq;
    while (mb != NULL && keys > 0 && mb[keys - 1] == 0.0f) {
        keys--;
    }
    return keys;
}

/* One (sample, head): its block of query rows at a time. scores: block x seq floats,
 * inv: block floats. */
static void attn_head(const attn_job *j, size_t b, size_t h, float *scores, float *inv) {
    const kernels_attention_shape *c = j->c;
    const size_t hidden = c->heads * c->head_dim, col0 = h * c->head_dim;
    const float *mb = j->mask != NULL ? j->mask + b * c->seq : NULL;
    const size_t keys = attn_keys(mb, c->seq);
    float *yh = j->y + b * c->seq * hidden + col0;
    if (keys == 0) { /* no token at all: zeros */
        for (size_t t = 0; t < c->seq; t++) {
            memset(yh + t * hidden, 0, c->head_dim * sizeof(*yh));
        }
        return;
    }
    int holes = 0; /* masked keys before the last token */
    for (size_t t = 0; mb != NULL && t < keys; t++) {
        holes |= mb[t] == 0.0f;
    }
    const size_t row0 = b * c->seq * c->ld + col0;
    for (size_t i0 = 0; i0 < c->seq; i0 += j->block) {
        const size_t rows = c->seq - i0 < j->block ? c->seq - i0 : j->block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)keys,
                    (blasint)c->head_dim, j->scale, j->q + row0 + i0 * c->ld, (blasint)c->ld,
                    j->k + row0, (blasint)c->ld, 0.0f, scores, (blasint)keys);
        for (size_t i = 0; i < rows; i++) { /* exp(s - max), normalised after the GEMM */
            float *row = scores + i * keys;
            for (size_t t = 0; holes && t < keys; t++) {
                row[t] = mb[t] != 0.0f ? row[t] : -INFINITY;
            }
            inv[i] = (float)(1.0 / cpu_vmath_exp_sum(row, keys, cpu_vmath_max(row, keys), row));
        }
        float *yb = yh + i0 * hidden;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)rows, (blasint)c->head_dim,
                    (blasint)keys, 1.0f, scores, (blasint)keys, j->v + row0, (blasint)c->ld, 0.0f,
                    yb, (blasint)hidden);
        for (size_t i = 0; i < rows; i++) {
            for (size_t d = 0; d < c->head_dim; d++) {
                yb[i * hidden + d] *= inv[i];
            }
        }
    }
}

static void attn_part(void *arg, size_t begin, size_t end, size_t part) {
    const attn_job *j = arg;
    float *scores = j->scratch + part * j->block * (j->c->seq + 1);
    float *inv = scores + j->block * j->c->seq;
    for (size_t item = begin; item < end; item++) {
        attn_head(j, item / j->c->heads, item % j->c->heads, scores, inv);
    }
}

ps_status cpu_attention(void *exec, const kernels_attention_shape *c, const float *q,
                        const float *k, const float *v, const float *mask, float *y) {
    cpu_pool *pool = exec;
    /* seq <= 8192 and head_dim <= KERNELS_MAX_DIM: checked; no product overflows */
    size_t block = ATTN_GEMM_MNK / (c->seq * c->head_dim);
    block = block < ATTN_MIN_ROWS ? ATTN_MIN_ROWS : block;
    block = block > c->seq ? c->seq : block;
    const size_t parts = cpu_pool_threads(pool);
    attn_job j = {.c = c,
                  .q = q,
                  .k = k,
                  .v = v,
                  .mask = mask,
                  .y = y,
                  .scale = (float)(1.0 / sqrt((double)c->head_dim)),
                  .block = block,
                  .scratch = malloc(parts * block * (c->seq + 1) * sizeof(float))};
    if (j.scratch == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    const size_t madds = c->seq * c->seq * c->head_dim; /* per (sample, head), about */
    const size_t grain = madds >= ATTN_GRAIN_MADDS ? 1 : ATTN_GRAIN_MADDS / madds;
    cpu_pool_run(pool, c->batch * c->heads, grain, attn_part, &j);
    free(j.scratch);
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* mean pooling: items are samples */

typedef struct pool_job {
    const float *x, *mask;
    float *y;
    size_t seq, dim;
} pool_job;

static void mean_pool_part(void *arg, size_t begin, size_t end, size_t part) {
    (void)part;
    const pool_job *j = arg;
    for (size_t b = begin; b < end; b++) {
        float *yb = j->y + b * j->dim;
        memset(yb, 0, j->dim * sizeof(*yb));
        double weight = 0.0;
        for (size_t t = 0; t < j->seq; t++) {
            const float m = j->mask != NULL ? j->mask[b * j->seq + t] : 1.0f;
            weight += m;
            if (m == 0.0f) {
                continue;
            }
            const float *xt = j->x + (b * j->seq + t) * j->dim;
            for (size_t d = 0; d < j->dim; d++) {
                yb[d] += m * xt[d];
            }
        }
        const float inv = (float)(1.0 / (weight > 1e-9 ? weight : 1e-9));
        for (size_t d = 0; d < j->dim; d++) {
            yb[d] *= inv;
        }
    }
}

ps_status cpu_mean_pool(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                        const float *mask, float *y) {
    pool_job j = {.x = x, .mask = mask, .y = y, .seq = seq, .dim = dim};
    /* seq * dim <= KERNELS_MAX_DIM: checked */
    cpu_pool_run(exec, batch, cpu_rows_grain(seq * dim, CPU_GRAIN_CHEAP), mean_pool_part, &j);
    return PS_STATUS_OK;
}
