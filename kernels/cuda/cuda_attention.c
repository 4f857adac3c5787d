/* cuda_attention.c: multi-head self-attention of the CUDA backend (ops.h
 * kernels_attention_shape): per head, scores = q k^T / sqrt(head_dim) and y = P v as
 * cuBLAS strided-batched SGEMMs over the samples, with a masked softmax kernel between
 * them (cuda_launch_masked_softmax).
 *
 * Why not cuDNN's SDPA or a fused kernel: cuDNN's SDPA takes FP16/BF16 only and the
 * backend is FP32 (notes/cuda-libs.md), and two GEMMs around a softmax are exact
 * enough for the op tests' 1e-5 / 1e-4. The GEMMs read q, k and v where they lie
 * (strided views of one packed projection or three tensors, ld apart) and write each
 * head's columns of y directly (ldc = hidden), as the CPU backend does with sgemm.
 *
 * Row-major through column-major cuBLAS: a row-major [r, c] matrix with leading
 * dimension ld is the column-major [c, r] matrix with the same ld. So the scores
 * S[q_tok, k_tok] (row-major, ld seq) are the column-major S' = K' Q (m = n = seq,
 * k = head_dim), and Y[q_tok, d] = P V is the column-major Y' = V' P'.
 *
 * Scratch: the scores of `chunk` samples (chunk x seq x seq floats) from the
 * stream-ordered pool, with chunk chosen so they fit CUDA_ATTENTION_SCRATCH_BYTES
 * (one sample at the longest sequence, 8192: 256 MiB). Unlike the CPU, every key of
 * every sample is scored (the mask lives on the device, so the host cannot trim
 * trailing padding without a sync); masked keys get weight 0 in the softmax, and a
 * sample without tokens gets zeros, as ops.h says.
 */
#include "cuda_internal.h"

#include <math.h>

#include "cuda_kernels.h"

size_t cuda_attention_chunk(size_t batch, size_t seq) {
    const size_t per_sample = seq * seq * sizeof(float); /* seq <= 8192: no overflow */
    size_t n = CUDA_ATTENTION_SCRATCH_BYTES / per_sample;
    n = n < 1 ? 1 : n;
    return n < batch ? n : batch;
}

/* One head of samples b0 .. b0 + nb - 1: scores, softmax, y. */
static ps_status attention_head(cuda_exec *e, const kernels_attention_shape *c, size_t b0,
                                size_t nb, size_t h, const float *q, const float *k, const float *v,
                                const float *mask, float *scores, float *y) {
    const size_t hidden = c->heads * c->head_dim;
    const size_t in0 = b0 * c->seq * c->ld + h * c->head_dim;
    const int seq = (int)c->seq, dim = (int)c->head_dim, ld = (int)c->ld, batch = (int)nb;
    const long long in_stride = (long long)(c->seq * c->ld);
    const long long s_stride = (long long)(c->seq * c->seq);
    const float scale = (float)(1.0 / sqrt((double)c->head_dim)), one = 1.0f, zero = 0.0f;
    ps_status st =
        cuda_check_blas(e,
                        cublasSgemmStridedBatched(e->blas, CUBLAS_OP_T, CUBLAS_OP_N, seq, seq, dim,
                                                  &scale, k + in0, ld, in_stride, q + in0, ld,
                                                  in_stride, &zero, scores, seq, s_stride, batch),
                        "cublasSgemmStridedBatched (scores)");
    if (st != PS_STATUS_OK) {
        return st;
    }
    const float *mb = mask != NULL ? mask + b0 * c->seq : NULL;
    st = cuda_check_rt(
        e, cuda_launch_masked_softmax(e->stream, scores, nb, c->seq, c->seq, mb, c->seq),
        "masked_softmax kernel");
    if (st != PS_STATUS_OK) {
        return st;
    }
    float *yh = y + b0 * c->seq * hidden + h * c->head_dim;
    return cuda_check_blas(e,
                           cublasSgemmStridedBatched(e->blas, CUBLAS_OP_N, CUBLAS_OP_N, dim, seq,
                                                     seq, &one, v + in0, ld, in_stride, scores, seq,
                                                     s_stride, &zero, yh, (int)hidden,
                                                     (long long)(c->seq * hidden), batch),
                           "cublasSgemmStridedBatched (values)");
}

ps_status cuda_attention(void *exec, const kernels_attention_shape *shape, const float *q,
                         const float *k, const float *v, const float *mask, float *y) {
    cuda_exec *e = exec;
    const size_t chunk = cuda_attention_chunk(shape->batch, shape->seq);
    float *scores = NULL;
    ps_status st =
        cuda_check_rt(e,
                      cudaMallocAsync((void **)&scores,
                                      chunk * shape->seq * shape->seq * sizeof(float), e->stream),
                      "cudaMallocAsync (attention scores)");
    if (st != PS_STATUS_OK) {
        return st;
    }
    for (size_t b0 = 0; b0 < shape->batch && st == PS_STATUS_OK; b0 += chunk) {
        const size_t nb = shape->batch - b0 < chunk ? shape->batch - b0 : chunk;
        for (size_t h = 0; h < shape->heads && st == PS_STATUS_OK; h++) {
            st = attention_head(e, shape, b0, nb, h, q, k, v, mask, scores, y);
        }
    }
    ps_status fst = cuda_check_rt(e, cudaFreeAsync(scores, e->stream), "cudaFreeAsync");
    return st != PS_STATUS_OK ? st : fst;
}
