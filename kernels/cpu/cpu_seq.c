/* cpu_seq.c: layernorm, attention, mean pooling and L2 normalisation of the CPU backend
 * (see ops.h).
 *
 * Attention runs per (sample, head) as two sgemm calls on strided views of q, k and v
 * (no copies): scores[seq, keys] = q k^T / sqrt(head_dim), a masked softmax per row,
 * then y = probs v written straight into the head's columns of y (ldc = hidden). Keys
 * after a sample's last token are never computed (right padding, the usual case, costs
 * nothing); masked keys before it get weight 0. The score matrix is the one scratch
 * buffer, seq x seq floats, allocated per call.
 *
 * Layernorm computes its mean and variance in double (two passes, no cancellation);
 * mean pooling adds the weighted token rows in float, a vectorisable row loop; L2
 * normalisation sums each row's squares in double (no overflow for any float input).
 */
#include "cpu_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

ps_status cpu_layernorm(void *exec, const float *x, size_t rows, size_t cols, const float *gamma,
                        const float *beta, float eps, float *y) {
    (void)exec;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        double sum = 0.0;
        for (size_t c = 0; c < cols; c++) {
            sum += xr[c];
        }
        const double mean = sum / (double)cols;
        double sq = 0.0;
        for (size_t c = 0; c < cols; c++) {
            const double d = xr[c] - mean;
            sq += d * d;
        }
        const float inv = (float)(1.0 / sqrt(sq / (double)cols + (double)eps));
        const float m = (float)mean;
        for (size_t c = 0; c < cols; c++) {
            const float g = gamma != NULL ? gamma[c] : 1.0f;
            const float b = beta != NULL ? beta[c] : 0.0f;
            yr[c] = (xr[c] - m) * inv * g + b;
        }
    }
    return PS_STATUS_OK;
}

/* Softmax of scores[rows, keys] (ld keys) over the keys whose mask is non-zero (mask
 * NULL: all); masked keys get 0. At least one key is unmasked. */
static void masked_softmax(float *scores, size_t rows, size_t keys, const float *mask) {
    for (size_t i = 0; i < rows; i++) {
        float *row = scores + i * keys;
        float max = -INFINITY;
        for (size_t j = 0; j < keys; j++) {
            if (mask == NULL || mask[j] != 0.0f) {
                max = row[j] > max ? row[j] : max;
            }
        }
        double sum = 0.0;
        for (size_t j = 0; j < keys; j++) {
            row[j] = mask == NULL || mask[j] != 0.0f ? expf(row[j] - max) : 0.0f;
            sum += row[j];
        }
        const float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < keys; j++) {
            row[j] *= inv;
        }
    }
}

ps_status cpu_attention(void *exec, const kernels_attention_shape *c, const float *q,
                        const float *k, const float *v, const float *mask, float *y) {
    (void)exec;
    const size_t hidden = c->heads * c->head_dim;
    const float scale = (float)(1.0 / sqrt((double)c->head_dim));
    float *scores = malloc(c->seq * c->seq * sizeof(*scores)); /* seq <= 8192: checked */
    if (scores == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t b = 0; b < c->batch; b++) {
        const float *mb = mask != NULL ? mask + b * c->seq : NULL;
        size_t keys = c->seq; /* keys up to the last token */
        while (mb != NULL && keys > 0 && mb[keys - 1] == 0.0f) {
            keys--;
        }
        float *yb = y + b * c->seq * hidden;
        if (keys == 0) { /* no token at all: zeros */
            memset(yb, 0, c->seq * hidden * sizeof(*yb));
            continue;
        }
        const size_t row0 = b * c->seq * c->ld;
        for (size_t h = 0; h < c->heads; h++) {
            const size_t col0 = h * c->head_dim;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)c->seq, (blasint)keys,
                        (blasint)c->head_dim, scale, q + row0 + col0, (blasint)c->ld,
                        k + row0 + col0, (blasint)c->ld, 0.0f, scores, (blasint)keys);
            masked_softmax(scores, c->seq, keys, mb);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)c->seq,
                        (blasint)c->head_dim, (blasint)keys, 1.0f, scores, (blasint)keys,
                        v + row0 + col0, (blasint)c->ld, 0.0f, yb + col0, (blasint)hidden);
        }
    }
    free(scores);
    return PS_STATUS_OK;
}

ps_status cpu_mean_pool(void *exec, const float *x, size_t batch, size_t seq, size_t dim,
                        const float *mask, float *y) {
    (void)exec;
    for (size_t b = 0; b < batch; b++) {
        float *yb = y + b * dim;
        memset(yb, 0, dim * sizeof(*yb));
        double weight = 0.0;
        for (size_t t = 0; t < seq; t++) {
            const float m = mask != NULL ? mask[b * seq + t] : 1.0f;
            weight += m;
            if (m == 0.0f) {
                continue;
            }
            const float *xt = x + (b * seq + t) * dim;
            for (size_t d = 0; d < dim; d++) {
                yb[d] += m * xt[d];
            }
        }
        const float inv = (float)(1.0 / (weight > 1e-9 ? weight : 1e-9));
        for (size_t d = 0; d < dim; d++) {
            yb[d] *= inv;
        }
    }
    return PS_STATUS_OK;
}

ps_status cpu_l2_normalize(void *exec, const float *x, size_t rows, size_t cols, float eps,
                           float *y) {
    (void)exec;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * cols;
        float *yr = y + r * cols;
        double sq = 0.0;
        for (size_t c = 0; c < cols; c++) {
            sq += (double)xr[c] * xr[c];
        }
        const double norm = sqrt(sq);
        const float inv = (float)(1.0 / (norm > (double)eps ? norm : (double)eps));
        for (size_t c = 0; c < cols; c++) {
            yr[c] = xr[c] * inv;
        }
    }
    return PS_STATUS_OK;
}
