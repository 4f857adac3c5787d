/* test_cpu_vmath.c: unit tests of the CPU backend's vectorised math (cmocka) against
 * the C library in double: exp within 2 ulp over floats spread across the whole range
 * (every 997th bit pattern: 4.3 million, denormal results and overflow included), GELU
 * within 2.5e-7 |x| absolute everywhere and 1e-5 relative on the negative side down to
 * -5.4 (where 1 + erff(x / sqrt 2) loses every digit to cancellation), the special
 * values, and the row reductions at every length around the vector width.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cpu_vmath.h"

#define STRIDE 997u /* between the float bit patterns checked */
#define BATCH 4096u /* floats per call */

static float from_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof(f));
    return f;
}

/* The gap between want (rounded to float) and the next float away from zero. */
static double ulp_of(double want) {
    const float w = (float)fabs(want);
    if (w < FLT_MIN) {
        return 0x1p-149;
    }
    return (double)nextafterf(w, INFINITY) - (double)w;
}

static void test_exp(void **state) {
    (void)state;
    static float x[BATCH], y[BATCH];
    double worst = 0;
    for (uint64_t b = 0; b <= UINT32_MAX;) {
        size_t n = 0;
        for (; n < BATCH && b <= UINT32_MAX; n++, b += STRIDE) {
            x[n] = from_bits((uint32_t)b);
        }
        cpu_vmath_exp(x, n, y);
        for (size_t i = 0; i < n; i++) {
            const double want = exp((double)x[i]);
            if (isnan(x[i])) {
                assert_true(isnan(y[i]));
            } else if (want > FLT_MAX) {
                assert_true(isinf(y[i]) && y[i] > 0);
            } else {
                const double err = fabs(y[i] - want) / ulp_of(want);
                if (!(err <= 2.0)) {
                    fail_msg("exp(%a) = %a, want %a (%.2f ulp)", (double)x[i], (double)y[i], want,
                             err);
                }
                worst = err > worst ? err : worst;
            }
        }
    }
    print_message("# exp: worst %.3f ulp\n", worst);
    const float sp[] = {INFINITY, -INFINITY, 0.0f, -0.0f, 88.72283f, 88.72284f, -103.0f, -104.5f};
    const float want[] = {INFINITY, 0.0f, 1.0f, 1.0f, expf(88.72283f), INFINITY, 0x1p-149f, 0.0f};
    float got[8];
    cpu_vmath_exp(sp, 8, got);
    for (int i = 0; i < 8; i++) {
        assert_true(got[i] == want[i] && !signbit(got[i]));
    }
}

static void test_gelu(void **state) {
    (void)state;
    static float x[BATCH], y[BATCH];
    for (uint64_t b = 0; b <= UINT32_MAX;) {
        size_t n = 0;
        for (; n < BATCH && b <= UINT32_MAX; n++, b += STRIDE) {
            x[n] = from_bits((uint32_t)b);
        }
        memcpy(y, x, n * sizeof(*y));
        cpu_vmath_gelu(y, n);
        for (size_t i = 0; i < n; i++) {
            const double v = x[i];
            if (!isfinite(v)) {
                continue; /* below */
            }
            const double want =
                v < 0 ? 0.5 * v * erfc(-v / sqrt(2.0)) : 0.5 * v * (1 + erf(v / sqrt(2.0)));
            const double err = fabs(y[i] - want);
            if (!(err <= 2.5e-7 * fabs(v) + 0x1p-149) ||
                (v < 0 && v > -5.4 && !(err <= 1e-5 * fabs(want) + 0x1p-149))) {
                fail_msg("gelu(%a) = %a, want %a", v, (double)y[i], want);
            }
        }
    }
    float sp[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f, -88.0f, 88.0f};
    cpu_vmath_gelu(sp, 7);
    assert_true(isinf(sp[0]) && sp[0] > 0);
    assert_true(isnan(sp[1]) && isnan(sp[2])); /* -inf * 0, as 0.5f x (1 + erff(..)) */
    assert_true(sp[3] == 0.0f && signbit(sp[3]));
    assert_true(sp[4] == 0.0f && !signbit(sp[4]));
    assert_true(sp[5] == 0.0f && signbit(sp[5]));
    assert_true(sp[6] == 88.0f);
}

static void test_reductions(void **state) {
    (void)state;
    float x[70], y[70];
    for (size_t n = 1; n <= 70; n++) {
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)sin((double)(i * 7 + n)) * 30.0f;
        }
        double max = -INFINITY, sum = 0, sq = 0, esum = 0;
        for (size_t i = 0; i < n; i++) {
            max = fmax(max, x[i]);
            sum += x[i];
        }
        for (size_t i = 0; i < n; i++) {
            sq += (x[i] - sum / n) * (x[i] - sum / n);
            esum += exp(x[i] - max);
        }
        assert_true(cpu_vmath_max(x, n) == (float)max);
        assert_true(fabs(cpu_vmath_sum(x, n) - sum) <= 1e-12 * (fabs(sum) + n));
        assert_true(fabs(cpu_vmath_sq_dev(x, n, sum / n) - sq) <= 1e-12 * sq + 1e-12);
        cpu_vmath_softmax(x, n, y);
        for (size_t i = 0; i < n; i++) {
            const double want = exp(x[i] - max) / esum;
            if (!(fabs(y[i] - want) <= 1e-7 + 1e-6 * want)) {
                fail_msg("softmax n=%zu [%zu] = %a, want %a", n, i, (double)y[i], want);
            }
        }
    }
    x[0] = NAN;
    assert_true(isnan(cpu_vmath_max(x, 70)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_reductions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
