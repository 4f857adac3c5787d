/* cpu_image.c: conv2d and pool2d of the CPU backend (NCHW, see ops.h).
 *
 * conv2d is im2col + sgemm: for each image and group, the input patches are laid out as
 * a matrix col[Cg*R*S, P*Q] and one GEMM y[Kg, P*Q] = w[Kg, Cg*R*S] col gives the output
 * in NCHW directly (ldc P*Q). The col matrix is built for a band of output rows at a
 * time, so its memory stays under COL_BUDGET floats whatever the image size. A 1x1
 * convolution with stride 1 and no padding needs no col matrix: the image itself is
 * the GEMM's B. The bias is written into y first (sgemm beta = 1), the activation
 * applied once at the end. Depthwise convolutions (groups = C = K) are the exception:
 * their GEMM would have one row and R*S columns, so a direct loop per plane runs them.
 * Measured on the development machine (2 shared cores, AVX-512, OpenBLAS Cooperlake
 * kernels): im2col + sgemm ran ResNet-like 1x1, 3x3 and 7x7/2 layers and a 5x5 1->32
 * layer at 39-85 GFLOP/s against 3-8 for a vectorised direct loop; a depthwise 3x3 ran
 * at 2.5 through im2col against 5.6 direct.
 *
 * pool2d is a loop per output element over its clipped window.
 */
#include "cpu_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Most floats of one im2col band (16 MiB); a band is never less than one output row. */
#define COL_BUDGET ((size_t)4 << 20)

/* Fills col[Cg*R*S, band*Q] for output rows p0 .. p0+band-1 of image xg[Cg, H, W]. */
static void im2col_band(const kernels_conv2d_shape *c, const float *xg, size_t cg, size_t p0,
                        size_t band, size_t q_len, float *col) {
    const size_t n_cols = band * q_len;
    for (size_t ch = 0; ch < cg; ch++) {
        const float *img = xg + ch * c->in_h * c->in_w;
        for (size_t r = 0; r < c->kernel_h; r++) {
            for (size_t s = 0; s < c->kernel_w; s++) {
                float *dst = col + ((ch * c->kernel_h + r) * c->kernel_w + s) * n_cols;
                for (size_t pp = 0; pp < band; pp++, dst += q_len) {
                    const int64_t ih =
                        (int64_t)((p0 + pp) * c->stride_h + r * c->dilation_h) - (int64_t)c->pad_h;
                    if (ih < 0 || ih >= (int64_t)c->in_h) {
                        memset(dst, 0, q_len * sizeof(*dst));
                        continue;
                    }
                    const float *src = img + (size_t)ih * c->in_w;
                    for (size_t q = 0; q < q_len; q++) {
                        const int64_t iw =
                            (int64_t)(q * c->stride_w + s * c->dilation_w) - (int64_t)c->pad_w;
                        dst[q] = iw >= 0 && iw < (int64_t)c->in_w ? src[iw] : 0.0f;
                    }
                }
            }
        }
    }
}

/* Depthwise path (one input channel per output channel): out[P, Q] += each tap's weight
 * times the shifted, strided plane, tap by tap. The q loop of a tap is clipped to the
 * image first, so its body has no branch and vectorises (unit stride when stride_w
 * is 1). */
static void conv_direct_plane(const kernels_conv2d_shape *c, const float *restrict img,
                              const float *restrict wk, size_t p_len, size_t q_len,
                              float *restrict out) {
    const int64_t sw = (int64_t)c->stride_w, in_w = (int64_t)c->in_w;
    for (size_t r = 0; r < c->kernel_h; r++) {
        for (size_t s = 0; s < c->kernel_w; s++) {
            const float wv = wk[r * c->kernel_w + s];
            const int64_t off = (int64_t)(s * c->dilation_w) - (int64_t)c->pad_w;
            /* q in [q0, q1): 0 <= q * sw + off < in_w */
            const int64_t q0 = off >= 0 ? 0 : (-off + sw - 1) / sw;
            int64_t q1 = in_w - off <= 0 ? 0 : (in_w - off + sw - 1) / sw;
            q1 = q1 > (int64_t)q_len ? (int64_t)q_len : q1;
            for (size_t p = 0; p < p_len; p++) {
                const int64_t ih =
                    (int64_t)(p * c->stride_h + r * c->dilation_h) - (int64_t)c->pad_h;
                if (ih < 0 || ih >= (int64_t)c->in_h) {
                    continue;
                }
                const float *restrict row = img + ih * in_w;
                float *restrict yr = out + p * q_len;
                for (int64_t q = q0; q < q1; q++) {
                    yr[q] += wv * row[q * sw + off];
                }
            }
        }
    }
}

ps_status cpu_conv2d(void *exec, const kernels_conv2d_shape *c, const float *x, const float *w,
                     const float *bias, kernels_activation act, float *y) {
    size_t p_len, q_len;
    ps_status st = kernels_conv2d_out_size(c, &p_len, &q_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const size_t cg = c->in_channels / c->groups;
    const size_t kg = c->out_channels / c->groups;
    const size_t taps = cg * c->kernel_h * c->kernel_w; /* <= the weight count: checked */
    const size_t pq = p_len * q_len;
    const int depthwise = cg == 1 && kg == 1; /* measured: see the top */
    const int pointwise = !depthwise && c->kernel_h == 1 && c->kernel_w == 1 && c->stride_h == 1 &&
                          c->stride_w == 1 && c->pad_h == 0 && c->pad_w == 0;
    size_t band = 0, row_floats = 0;
    float *col = NULL;
    if (!pointwise && !depthwise) {
        if (__builtin_mul_overflow(taps, q_len, &row_floats)) {
            return PS_STATUS_RESOURCE_EXHAUSTED;
        }
        band = COL_BUDGET / row_floats;
        band = band < 1 ? 1 : band > p_len ? p_len : band;
        col = malloc(row_floats * band * sizeof(*col));
        if (col == NULL) {
            return PS_STATUS_NO_MEMORY;
        }
    }
    const float beta = bias != NULL ? 1.0f : 0.0f;
    for (size_t n = 0; n < c->batch; n++) {
        for (size_t g = 0; g < c->groups; g++) {
            const float *xg = x + (n * c->in_channels + g * cg) * c->in_h * c->in_w;
            const float *wg = w + g * kg * taps;
            float *yg = y + (n * c->out_channels + g * kg) * pq;
            for (size_t k = 0; bias != NULL && k < kg; k++) {
                for (size_t i = 0; i < pq; i++) {
                    yg[k * pq + i] = bias[g * kg + k];
                }
            }
            if (depthwise) {
                for (size_t k = 0; k < kg; k++) {
                    if (bias == NULL) {
                        memset(yg + k * pq, 0, pq * sizeof(*yg));
                    }
                    conv_direct_plane(c, xg, wg + k * taps, p_len, q_len, yg + k * pq);
                }
                continue;
            }
            if (pointwise) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)kg, (blasint)pq,
                            (blasint)taps, 1.0f, wg, (blasint)taps, xg, (blasint)pq, beta, yg,
                            (blasint)pq);
                continue;
            }
            for (size_t p0 = 0; p0 < p_len; p0 += band) {
                const size_t rows = p_len - p0 < band ? p_len - p0 : band;
                im2col_band(c, xg, cg, p0, rows, q_len, col);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)kg,
                            (blasint)(rows * q_len), (blasint)taps, 1.0f, wg, (blasint)taps, col,
                            (blasint)(rows * q_len), beta, yg + p0 * q_len, (blasint)pq);
            }
        }
    }
    free(col);
    cpu_act_apply(exec, y, c->batch * c->out_channels * pq, act);
    return PS_STATUS_OK;
}

/* One output element of pool2d: the window of output (p, q) of plane img[H, W]. */
static float pool_window(const kernels_pool2d_shape *c, kernels_pool2d_kind kind, const float *img,
                         size_t p, size_t q) {
    const int64_t h0 = (int64_t)(p * c->stride_h) - (int64_t)c->pad_h;
    const int64_t w0 = (int64_t)(q * c->stride_w) - (int64_t)c->pad_w;
    const int64_t h1 = h0 + (int64_t)c->kernel_h, w1 = w0 + (int64_t)c->kernel_w;
    const size_t ha = h0 < 0 ? 0 : (size_t)h0;
    const size_t wa = w0 < 0 ? 0 : (size_t)w0;
    const size_t hb = h1 > (int64_t)c->in_h ? c->in_h : (size_t)h1;
    const size_t wb = w1 > (int64_t)c->in_w ? c->in_w : (size_t)w1;
    if (kind == KERNELS_POOL2D_MAX) {
        float m = -INFINITY; /* pad <= kernel / 2: every window holds an element */
        for (size_t h = ha; h < hb; h++) {
            for (size_t v = wa; v < wb; v++) {
                m = img[h * c->in_w + v] > m ? img[h * c->in_w + v] : m;
            }
        }
        return m;
    }
    float sum = 0.0f;
    for (size_t h = ha; h < hb; h++) {
        for (size_t v = wa; v < wb; v++) {
            sum += img[h * c->in_w + v];
        }
    }
    const size_t count =
        kind == KERNELS_POOL2D_AVG ? c->kernel_h * c->kernel_w : (hb - ha) * (wb - wa);
    return sum / (float)count;
}

ps_status cpu_pool2d(void *exec, const kernels_pool2d_shape *c, kernels_pool2d_kind kind,
                     const float *x, float *y) {
    (void)exec;
    size_t p_len, q_len;
    ps_status st = kernels_pool2d_out_size(c, &p_len, &q_len);
    if (st != PS_STATUS_OK) {
        return st;
    }
    const size_t planes = c->batch * c->channels;
    for (size_t i = 0; i < planes; i++) {
        const float *img = x + i * c->in_h * c->in_w;
        float *out = y + i * p_len * q_len;
        for (size_t p = 0; p < p_len; p++) {
            for (size_t q = 0; q < q_len; q++) {
                out[p * q_len + q] = pool_window(c, kind, img, p, q);
            }
        }
    }
    return PS_STATUS_OK;
}
