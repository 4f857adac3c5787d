/* cuda_dense.c: the CUDA backend's dense op, y = act(x w^T + bias), as one cuBLASLt
 * matmul with the bias (and ReLU) fused into its epilogue.
 *
 * Row-major without copies: cuBLASLt is column-major, and a row-major matrix is the
 * column-major view of its transpose, so y[rows, out] (row-major) is computed as the
 * column-major D[out, rows] = W^T' X' with A = w viewed as [in, out] (ld in,
 * transposed) and B = x viewed as [in, rows] (ld in). The bias then runs along D's
 * rows, which is the one layout cuBLASLt's bias epilogue takes.
 *
 * Epilogues: ReLU fuses (RELU_BIAS / RELU). GELU does not: cuBLASLt does not document
 * which GELU form its epilogue computes, and ops.h promises the erf form, so GELU,
 * sigmoid and tanh run as one elementwise kernel after a BIAS epilogue.
 *
 * Precision: FP32 uses CUBLAS_COMPUTE_32F (never TF32, which the op tests' tolerances
 * would not accept). BF16 (backend opened with KERNELS_PRECISION_BF16) rounds x and w
 * to BF16 into stream-ordered scratch and multiplies with FP32 accumulation, FP32
 * bias and FP32 output. The weights are converted on every call: correct whatever
 * writes them, at the price of one pass over w; keeping weights in BF16 needs typed
 * buffers in the backend interface (not there yet).
 *
 * Algorithms: cublasLtMatmulAlgoGetHeuristic costs tens of microseconds, a large part
 * of a small GEMM, so each stream remembers the algorithm chosen per (shape, epilogue,
 * precision, pointer alignments) in a small table replaced round-robin. Alignments are
 * part of the key because the heuristic assumes 256-byte aligned pointers unless told
 * otherwise, and ops may get views into larger buffers.
 */
#include "cuda_internal.h"

#include <string.h>

#include "cuda_kernels.h"

void cuda_dense_plan(kernels_activation act, bool bias, cublasLtEpilogue_t *ret_epilogue,
                     kernels_activation *ret_after) {
    if (act == KERNELS_ACTIVATION_RELU) {
        *ret_epilogue = bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
        *ret_after = KERNELS_ACTIVATION_NONE;
        return;
    }
    *ret_epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    *ret_after = act;
}

/* One matmul: pointers (x, w in FP32 or BF16 as ab_type says), shape and epilogue. */
typedef struct dense_call {
    const void *x, *w;
    const float *bias; /* NULL: none */
    float *y;
    uint64_t rows, in, out;
    cudaDataType_t ab_type;
    cublasLtEpilogue_t epilogue;
} dense_call;

/* The cache key of a call (an entry whose algo is not filled in). */
static cuda_lt_entry dense_key(const cuda_exec *e, const dense_call *c) {
    cuda_lt_entry k;
    memset(&k, 0, sizeof(k));
    k.used = true;
    k.rows = c->rows, k.in = c->in, k.out = c->out;
    k.epilogue = (int)c->epilogue;
    k.precision = (int)e->shared->precision;
    k.align[0] = cuda_ptr_align(c->x), k.align[1] = cuda_ptr_align(c->w);
    k.align[2] = cuda_ptr_align(c->bias), k.align[3] = cuda_ptr_align(c->y);
    return k;
}

static cuda_lt_entry *cache_find(cuda_exec *e, const cuda_lt_entry *k) {
    for (unsigned i = 0; i < CUDA_LT_CACHE_SIZE; i++) {
        cuda_lt_entry *c = &e->lt_cache[i];
        if (c->used && c->rows == k->rows && c->in == k->in && c->out == k->out &&
            c->epilogue == k->epilogue && c->precision == k->precision &&
            memcmp(c->align, k->align, sizeof(k->align)) == 0) {
            return c;
        }
    }
    return NULL;
}

/* The algorithm for the call: from the cache, else the heuristic's first (cached). */
static ps_status dense_algo(cuda_exec *e, const dense_call *c, cublasLtMatmulDesc_t op,
                            cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                            cublasLtMatrixLayout_t ld, const cuda_lt_entry **ret) {
    const cuda_lt_entry key = dense_key(e, c);
    const cuda_lt_entry *hit = cache_find(e, &key);
    if (hit != NULL) {
        *ret = hit;
        return PS_STATUS_OK;
    }
    cublasLtMatmulPreference_t pref = NULL;
    ps_status st =
        cuda_check_blas(e, cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const uint64_t ws = CUDA_LT_WORKSPACE_BYTES;
    static const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, /* x is B */
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, /* w is A */
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, /* C is y too */
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, /* y */
    }; /* the bias's alignment the heuristic reads from its pointer on the desc */
    if (st == PS_STATUS_OK) {
        st = cuda_check_blas(e,
                             cublasLtMatmulPreferenceSetAttribute(
                                 pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                             "cublasLtMatmulPreferenceSetAttribute");
    }
    for (int i = 0; i < 4 && st == PS_STATUS_OK; i++) {
        const uint32_t a = i == 2 ? key.align[3] : key.align[i]; /* key.align[2]: bias */
        st = cuda_check_blas(
            e, cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &a, sizeof(a)),
            "cublasLtMatmulPreferenceSetAttribute");
    }
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    memset(&res, 0, sizeof(res));
    if (st == PS_STATUS_OK) {
        st = cuda_check_blas(e,
                             cublasLtMatmulAlgoGetHeuristic(e->shared->lt, op, la, lb, ld, ld, pref,
                                                            1, &res, &found),
                             "cublasLtMatmulAlgoGetHeuristic");
    }
    if (pref != NULL) {
        cublasLtMatmulPreferenceDestroy(pref);
    }
    if (st != PS_STATUS_OK) {
        return st;
    }
    if (found < 1 || res.state != CUBLAS_STATUS_SUCCESS) {
        return cuda_fail(e, PS_STATUS_UNIMPLEMENTED,
                         "cuBLASLt has no algorithm for dense %llux%llu->%llu (epilogue %d)",
                         (unsigned long long)c->rows, (unsigned long long)c->in,
                         (unsigned long long)c->out, (int)c->epilogue);
    }
    cuda_lt_entry *slot = &e->lt_cache[e->lt_next];
    e->lt_next = (e->lt_next + 1) % CUDA_LT_CACHE_SIZE;
    *slot = key;
    slot->algo = res.algo;
    slot->workspace = res.workspaceSize;
    *ret = slot;
    return PS_STATUS_OK;
}

static ps_status desc_set(cuda_exec *e, cublasLtMatmulDesc_t op,
                          cublasLtMatmulDescAttributes_t attr, const void *v, size_t len) {
    return cuda_check_blas(e, cublasLtMatmulDescSetAttribute(op, attr, v, len),
                           "cublasLtMatmulDescSetAttribute");
}

static ps_status dense_matmul(cuda_exec *e, const dense_call *c) {
    cublasLtMatmulDesc_t op = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    ps_status st = cuda_check_blas(e, cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                                   "cublasLtMatmulDescCreate");
    if (st == PS_STATUS_OK) {
        st = desc_set(e, op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a));
    }
    if (st == PS_STATUS_OK) {
        st = desc_set(e, op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b));
    }
    if (st == PS_STATUS_OK) {
        st = desc_set(e, op, CUBLASLT_MATMUL_DESC_EPILOGUE, &c->epilogue, sizeof(c->epilogue));
    }
    if (st == PS_STATUS_OK && c->bias != NULL) {
        st = desc_set(e, op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c->bias, sizeof(c->bias));
    }
    const int64_t ld_in = (int64_t)c->in, ld_out = (int64_t)c->out;
    if (st == PS_STATUS_OK) {
        st = cuda_check_blas(e, cublasLtMatrixLayoutCreate(&la, c->ab_type, c->in, c->out, ld_in),
                             "cublasLtMatrixLayoutCreate");
    }
    if (st == PS_STATUS_OK) {
        st = cuda_check_blas(e, cublasLtMatrixLayoutCreate(&lb, c->ab_type, c->in, c->rows, ld_in),
                             "cublasLtMatrixLayoutCreate");
    }
    if (st == PS_STATUS_OK) {
        st =
            cuda_check_blas(e, cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, c->out, c->rows, ld_out),
                            "cublasLtMatrixLayoutCreate");
    }
    const cuda_lt_entry *algo = NULL;
    if (st == PS_STATUS_OK) {
        st = dense_algo(e, c, op, la, lb, ld, &algo);
    }
    if (st == PS_STATUS_OK) {
        const float alpha = 1.0f, beta = 0.0f;
        st = cuda_check_blas(e,
                             cublasLtMatmul(e->shared->lt, op, &alpha, c->w, la, c->x, lb, &beta,
                                            c->y, ld, c->y, ld, &algo->algo, e->lt_workspace,
                                            algo->workspace, e->stream),
                             "cublasLtMatmul");
    }
    if (ld != NULL) {
        cublasLtMatrixLayoutDestroy(ld);
    }
    if (lb != NULL) {
        cublasLtMatrixLayoutDestroy(lb);
    }
    if (la != NULL) {
        cublasLtMatrixLayoutDestroy(la);
    }
    if (op != NULL) {
        cublasLtMatmulDescDestroy(op);
    }
    return st;
}

/* The BF16 path: x and w rounded into one scratch allocation, then the matmul. */
static ps_status dense_bf16(cuda_exec *e, dense_call *c, const float *x, const float *w) {
    const size_t bf16 = 2, align = 256;
    const size_t x_bytes = (size_t)(c->rows * c->in) * bf16;
    const size_t w_off = (x_bytes + align - 1) / align * align;
    const size_t bytes = w_off + (size_t)(c->out * c->in) * bf16;
    char *scratch = NULL;
    ps_status st = cuda_check_rt(e, cudaMallocAsync((void **)&scratch, bytes, e->stream),
                                 "cudaMallocAsync (bf16 copies)");
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = cuda_check_rt(e, cuda_launch_to_bf16(e->stream, x, c->rows * c->in, scratch),
                       "to_bf16 kernel");
    if (st == PS_STATUS_OK) {
        st = cuda_check_rt(e, cuda_launch_to_bf16(e->stream, w, c->out * c->in, scratch + w_off),
                           "to_bf16 kernel");
    }
    if (st == PS_STATUS_OK) {
        c->x = scratch, c->w = scratch + w_off, c->ab_type = CUDA_R_16BF;
        st = dense_matmul(e, c);
    }
    ps_status fst = cuda_check_rt(e, cudaFreeAsync(scratch, e->stream), "cudaFreeAsync");
    return st != PS_STATUS_OK ? st : fst;
}

ps_status cuda_dense(void *exec, const float *x, size_t rows, size_t in, const float *w,
                     const float *bias, size_t out, kernels_activation act, float *y) {
    cuda_exec *e = exec;
    kernels_activation after;
    dense_call c = {.x = x,
                    .w = w,
                    .bias = bias,
                    .y = y,
                    .rows = rows,
                    .in = in,
                    .out = out,
                    .ab_type = CUDA_R_32F};
    cuda_dense_plan(act, bias != NULL, &c.epilogue, &after);
    ps_status st = e->shared->precision == KERNELS_PRECISION_BF16 ? dense_bf16(e, &c, x, w)
                                                                  : dense_matmul(e, &c);
    if (st != PS_STATUS_OK || after == KERNELS_ACTIVATION_NONE) {
        return st;
    }
    return cuda_check_rt(e, cuda_launch_activation(e->stream, after, y, rows * out, y),
                         "activation kernel");
}
