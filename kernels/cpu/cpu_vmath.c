/* cpu_vmath.c: see cpu_vmath.h. The polynomial coefficients were fitted for this file
 * (least squares reweighted towards minimax on 4000 Chebyshev nodes, in double, against
 * the C library's exp, erf and erfc); their errors are stated in cpu_vmath.h.
 */
#include "cpu_vmath.h"

#include <stdint.h>
#include <string.h>

/* 16 floats: one AVX-512 register, two AVX2 ones, four SSE2 ones. The functions that
 * run them are compiled for each (target_clones), the best one picked at load. */
typedef float vfloat __attribute__((vector_size(64)));
typedef int32_t vint __attribute__((vector_size(64)));
typedef uint32_t vuint __attribute__((vector_size(64)));
typedef double vdouble __attribute__((vector_size(128)));
#define LANES 16
/* The helpers below take and return those vectors by value; they are static and
 * always inlined, so the ABI GCC warns about never applies. */
#pragma GCC diagnostic ignored "-Wpsabi"
#define INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES /* other machines: the generic vectors alone */
#endif

#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f             /* 9 bits: n * LN2_HI is exact for |n| <= 150 */
#define LN2_LO -2.12194440054690583e-4f /* ln 2 - LN2_HI */
#define ROUND_MAGIC 12582912.0f         /* 1.5 * 2^23: (v + it) - it rounds v to an integer */
#define EXP_LO -104.0f                  /* below: exp underflows to 0 */
#define EXP_HI 89.0f                    /* above: exp overflows to inf */
#define ERF_SMALL 1.0f                  /* |z| below: the series form of erf */
#define ERF_CENTER 2.5f                 /* Q's variable is |z| - ERF_CENTER */
#define ERF_ONE 3.92f                   /* |z| above: erf(z) rounds to +-1 in float */

/* m ? a : b lane by lane (m's lanes all ones or all zeros). */
INLINE vfloat vselect(vint m, vfloat a, vfloat b) {
    return (vfloat)((m & (vint)a) | (~m & (vint)b));
}

/* v in every lane (vector minus scalar broadcasts; -0 stays -0). */
INLINE vfloat vsplat(float v) {
    return v - (vfloat){0};
}

/* The sum of acc's lanes, pairwise (a chain of 4 adds, not 16). */
INLINE double hsum(vdouble acc) {
    double t[LANES];
    memcpy(t, &acc, sizeof(t));
    for (int w = LANES / 2; w >= 1; w /= 2) {
        for (int l = 0; l < w; l++) {
            t[l] += t[l + w];
        }
    }
    return t[0];
}

/* The largest of m's lanes, pairwise; NaN when every lane is NaN. */
INLINE float hmax(vfloat m) {
    float t[LANES];
    memcpy(t, &m, sizeof(t));
    for (int w = LANES / 2; w >= 1; w /= 2) {
        for (int l = 0; l < w; l++) {
            t[l] = t[l + w] > t[l] ? t[l + w] : t[l];
        }
    }
    return t[0];
}

INLINE vfloat vload(const float *p) {
    vfloat v;
    memcpy(&v, p, sizeof(v));
    return v;
}

INLINE void vstore(float *p, vfloat v) {
    memcpy(p, &v, sizeof(v));
}

/* The first k (< LANES) floats of p, the other lanes `pad`. */
INLINE vfloat vload_part(const float *p, size_t k, float pad) {
    vfloat v = vsplat(pad);
    memcpy(&v, p, k * sizeof(float));
    return v;
}

INLINE vfloat vexp(vfloat x) {
    x = vselect(x < EXP_LO, vsplat(EXP_LO), x); /* NaN stays NaN */
    x = vselect(x > EXP_HI, vsplat(EXP_HI), x);
    const vfloat n = (x * LOG2E + ROUND_MAGIC) - ROUND_MAGIC; /* round(x / ln 2) */
    vfloat r = x - n * LN2_HI;
    r = r - n * LN2_LO;
    vfloat p = 0.0013836803349321f * r + 0.00837481556526045f;
    p = p * r + 0.04166822633113485f;
    p = p * r + 0.16666420173426533f;
    p = p * r + 0.4999999207643592f;
    p = p * r + 1.00000003632213f;
    p = p * r + 1.0f;
    /* 2^n as two factors 2^n1 2^n2 (n in -150..128, each exponent normal), so a
     * denormal result is rounded once, by the last multiply. NaN lanes: n = 0. */
    const vint ni = __builtin_convertvector(vselect(n == n, n, vsplat(0.0f)), vint);
    const vint n1 = ni >> 1, n2 = ni - n1;
    const vfloat s1 = (vfloat)((vuint)(n1 + 127) << 23);
    const vfloat s2 = (vfloat)((vuint)(n2 + 127) << 23);
    return p * s1 * s2;
}

INLINE vfloat vgelu(vfloat x) {
    const vfloat z = x * 0.707106781186547524f;
    const vfloat a = (vfloat)((vint)z & 0x7fffffff); /* |z| */
    /* |z| < 1: h = 1 + z P(z^2) */
    const vfloat z2 = z * z;
    vfloat p = 7.8897691258626620e-05f * z2 - 8.0210509449134943e-04f;
    p = p * z2 + 5.1895613134889324e-03f;
    p = p * z2 - 2.6854459987923036e-02f;
    p = p * z2 + 1.1283600617479859e-01f;
    p = p * z2 - 3.7612627189588038e-01f;
    p = p * z2 + 1.1283791659318785e+00f;
    const vfloat h_small = 1.0f + z * p;
    /* |z| >= 1: erfc(|z|) = exp(Q(|z| - 2.5)), 0 past ERF_ONE (Q is garbage there) */
    const vfloat t = a - ERF_CENTER;
    vfloat q = 1.6319936152473341e-06f * t - 1.3278309653832837e-05f;
    q = q * t + 7.7332433477860727e-05f;
    q = q * t - 4.2024675180419939e-04f;
    q = q * t + 2.1652250020704417e-03f;
    q = q * t - 1.0858423299059512e-02f;
    q = q * t - 9.4389366092271521e-01f;
    q = q * t - 5.3526807017932416e+00f;
    q = q * t - 7.8068152760808101e+00f;
    const vfloat erfc = vselect(a > ERF_ONE, vsplat(0.0f), vexp(q));
    const vfloat h_large = vselect(z < 0.0f, erfc, 2.0f - erfc);
    return 0.5f * x * vselect(a < ERF_SMALL, h_small, h_large);
}

CLONES void cpu_vmath_gelu(float *y, size_t n) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        vstore(y + i, vgelu(vload(y + i)));
    }
    if (i < n) {
        const vfloat v = vgelu(vload_part(y + i, n - i, 0.0f));
        memcpy(y + i, &v, (n - i) * sizeof(float));
    }
}

CLONES void cpu_vmath_exp(const float *x, size_t n, float *y) {
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        vstore(y + i, vexp(vload(x + i)));
    }
    if (i < n) {
        const vfloat v = vexp(vload_part(x + i, n - i, 0.0f));
        memcpy(y + i, &v, (n - i) * sizeof(float));
    }
}

CLONES float cpu_vmath_max(const float *x, size_t n) {
    vfloat m = vsplat(x[0]);
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const vfloat v = vload(x + i);
        m = vselect(v > m, v, m);
    }
    float r = hmax(m); /* NaN only when x[0] is NaN: every lane starts from it */
    for (; i < n; i++) {
        r = x[i] > r ? x[i] : r;
    }
    return r;
}

CLONES double cpu_vmath_exp_sum(const float *x, size_t n, float shift, float *y) {
    vdouble acc = {0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const vfloat e = vexp(vload(x + i) - shift);
        vstore(y + i, e);
        acc += __builtin_convertvector(e, vdouble);
    }
    if (i < n) { /* padded with -inf: exp gives 0, which adds nothing */
        const vfloat e = vexp(vload_part(x + i, n - i, -__builtin_inff()) - shift);
        memcpy(y + i, &e, (n - i) * sizeof(float));
        acc += __builtin_convertvector(e, vdouble);
    }
    return hsum(acc);
}

void cpu_vmath_softmax(const float *x, size_t n, float *y) {
    const double sum = cpu_vmath_exp_sum(x, n, cpu_vmath_max(x, n), y);
    const float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++) {
        y[i] *= inv;
    }
}

CLONES double cpu_vmath_sum(const float *x, size_t n) {
    vdouble acc = {0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        acc += __builtin_convertvector(vload(x + i), vdouble);
    }
    double tail = 0.0;
    for (; i < n; i++) {
        tail += x[i];
    }
    return hsum(acc) + tail;
}

CLONES double cpu_vmath_sq_dev(const float *x, size_t n, double mean) {
    const vdouble m = mean - (vdouble){0};
    vdouble acc = {0.0, 0.0, 0.0, 0.0};
    size_t i = 0;
    for (; i + LANES <= n; i += LANES) {
        const vdouble d = __builtin_convertvector(vload(x + i), vdouble) - m;
        acc += d * d;
    }
    double tail = 0.0;
    for (; i < n; i++) {
        const double d = x[i] - mean;
        tail += d * d;
    }
    return hsum(acc) + tail;
}
