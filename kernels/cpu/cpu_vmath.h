/* cpu_vmath.h: the CPU backend's vectorised float math: GELU (the erf form), exp for
 * softmax, and the row reductions of softmax and layernorm. Not for other modules.
 *
 * Why: libm's erff and expf are scalar calls with branches, and GCC cannot vectorise a
 * loop that calls them; in the MiniLM encoder they cost more than the GEMMs they
 * follow. These are branch-free (both sides of every case are computed and one is
 * selected) and written with GCC vector extensions on 16 floats, compiled for AVX-512,
 * AVX2 and plain x86-64 (target_clones: the best the CPU has is picked at load; all
 * three give the same results). Measured on the development machine (AVX-512), per
 * element on one thread: GELU 1.3 ns against 12.5 ns for the erff loop, softmax of
 * 128-element rows 1.1 ns; the SSE2 clone runs GELU in 5.9 ns.
 *
 * Accuracy (checked over every float of the ranges by test_cpu_vmath.c):
 *   - exp: range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r
 *     (fitted here, relative error 2e-9), times 2^n in two steps so that results in
 *     the denormal range round once; within 2 ulp of exp. Overflow (x > 88.72...) gives
 *     +inf, underflow 0, exp(-inf) 0, NaN stays NaN: as expf.
 *   - GELU: 0.5 x h(x / sqrt 2) with h(z) = 1 + erf(z): for |z| < 1, erf(z) = z P(z^2)
 *     (degree 6, relative error 1.2e-9); for |z| >= 1, erfc(|z|) = exp(Q(|z| - 2.5))
 *     (degree 8, fitted to log erfc on [1, 3.92]) and h = erfc(|z|) for z < 0,
 *     2 - erfc(|z|) for z > 0, so the negative side has no cancellation (more exact
 *     than 1 + erff); past |z| = 3.92, where erff rounds to +-1, h is 0 or 2 exactly.
 *     Inf, NaN and large inputs give what 0.5f x (1 + erff(x / sqrt 2)) gives: GELU(+inf)
 *     = +inf, GELU(-inf) = NaN (-inf * 0), GELU(NaN) = NaN, GELU(-88) = -0, GELU(-0) =
 *     -0; absolute error below 1e-7 |x| elsewhere.
 *   - The reductions sum in double, four partial sums (the order differs from a plain
 *     loop; the accuracy of a double sum does not).
 */
#ifndef PS_KERNELS_CPU_VMATH_H
#define PS_KERNELS_CPU_VMATH_H

#include <stddef.h>

/* y[i] = 0.5 y[i] (1 + erf(y[i] / sqrt 2)) in place over n elements. */
void cpu_vmath_gelu(float *y, size_t n);

/* y[i] = exp(x[i]) over n elements (y may equal x). */
void cpu_vmath_exp(const float *x, size_t n, float *y);

/* The largest of x[0..n) (n >= 1); NaN when x[0] is NaN, and possibly when another
 * element is (exp(NaN - max) is NaN either way). */
float cpu_vmath_max(const float *x, size_t n);

/* y[i] = exp(x[i] - shift) over n elements (y may equal x); returns their sum, summed
 * in double. */
double cpu_vmath_exp_sum(const float *x, size_t n, float shift, float *y);

/* y = softmax(x) over n >= 1 elements (y may equal x): exp(x[i] - max) / their sum,
 * the sum in double. */
void cpu_vmath_softmax(const float *x, size_t n, float *y);

/* The sum of x[0..n), in double. */
double cpu_vmath_sum(const float *x, size_t n);

/* The sum of (x[i] - mean)^2 over x[0..n), in double. */
double cpu_vmath_sq_dev(const float *x, size_t n, double mean);

#endif
