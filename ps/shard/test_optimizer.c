/* test_optimizer.c: optimizer_step against a double-precision reference written here
 * from train_spec.h's formulas (several steps, state carried, odd sizes), the aliasing
 * contract (outputs on top of inputs give the same bits), Adagrad's initial accumulator,
 * FTRL's l1 zeroing, and optimizer_all_finite at every awkward position. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "optimizer.h"

/* |got - ref| <= REL_TOL * |ref| + ABS_TOL, float against double after five steps of
 * values of order 1 (the worst seen is ~3e-7 absolute, on small SGD momenta and FTRL
 * z values where float's cancellation shows; the tolerance leaves a margin of three). */
#define REL_TOL 1e-5
#define ABS_TOL 1e-6

static const uint32_t sizes[] = {1, 3, 17, 1000};
#define SIZE_COUNT (sizeof(sizes) / sizeof(sizes[0]))
#define MAX_N 1000u
#define STEPS 5u

static uint64_t rng_state = 0x243f6a8885a308d3ull;

/* Uniform in [lo, hi) (xorshift64*, deterministic). */
static float rnd(float lo, float hi) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    const uint64_t r = rng_state * 0x2545f4914f6cdd1dull;
    return lo + (hi - lo) * (float)((double)(r >> 40) / 16777216.0);
}

/* ---- the reference: one step in double, in place, straight from the header --------- */

static void ref_step(const optim_spec *s, uint32_t n, double *w, const float *g, double *st,
                     uint64_t step) {
    const double lr = s->lr, wd = s->weight_decay, eps = s->eps;
    for (uint32_t i = 0; i < n; i++) {
        if (s->kind == OPTIM_SGD) {
            const double gp = g[i] + wd * w[i];
            st[i] = (double)s->momentum * st[i] + gp;
            w[i] -= lr * st[i];
        } else if (s->kind == OPTIM_ADAGRAD) {
            const double gp = g[i] + wd * w[i];
            st[i] += gp * gp;
            w[i] -= lr * gp / (sqrt(st[i]) + eps);
        } else if (s->kind == OPTIM_ADAM) {
            const double b1 = s->beta1, b2 = s->beta2;
            const double gp = g[i] + wd * w[i];
            double *m = &st[i], *v = &st[n + i];
            *m = b1 * *m + (1.0 - b1) * gp;
            *v = b2 * *v + (1.0 - b2) * gp * gp;
            const double m_hat = *m / (1.0 - pow(b1, (double)step));
            const double v_hat = *v / (1.0 - pow(b2, (double)step));
            w[i] -= lr * m_hat / (sqrt(v_hat) + eps);
        } else if (s->kind == OPTIM_FTRL) {
            double *z = &st[i], *nn = &st[n + i];
            const double gi = g[i];
            const double sigma = (sqrt(*nn + gi * gi) - sqrt(*nn)) / lr;
            *z += gi - sigma * w[i];
            *nn += gi * gi;
            const double sign = *z < 0 ? -1.0 : 1.0;
            w[i] = fabs(*z) <= s->l1
                       ? 0.0
                       : -(*z - sign * s->l1) / (((double)s->beta + sqrt(*nn)) / lr + s->l2);
        }
    }
}

static void expect_close(const char *what, const float *got, const double *ref, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - ref[i]);
        if (!(err <= REL_TOL * fabs(ref[i]) + ABS_TOL))
            fail_msg("%s[%u] of %u: got %.9g, reference %.9g", what, i, n, (double)got[i], ref[i]);
    }
}

typedef struct buffers {
    float w[MAX_N], g[MAX_N], state[OPTIM_MAX_SLOTS * MAX_N];
    float w_out[MAX_N], state_out[OPTIM_MAX_SLOTS * MAX_N];
    double rw[MAX_N], rstate[OPTIM_MAX_SLOTS * MAX_N];
} buffers;

/* STEPS steps from `first_step` on, the float state carried from step to step and the
 * double reference carried beside it; a random (valid) state when `random_state`. */
static void run_against_reference(const optim_spec *spec, uint64_t first_step, bool random_state) {
    assert_int_equal(optim_spec_check(spec, NULL, 0), PS_STATUS_OK);
    buffers *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    const uint32_t slots = optim_spec_slots(spec->kind);
    for (size_t s = 0; s < SIZE_COUNT; s++) {
        const uint32_t n = sizes[s];
        for (uint32_t i = 0; i < n; i++)
            b->w[i] = spec->kind == OPTIM_FTRL ? 0.0f : rnd(-1.0f, 1.0f);
        for (uint32_t i = 0; i < n; i++)
            b->rw[i] = b->w[i];
        optimizer_state_init(spec, n, b->state);
        for (uint32_t i = 0; i < slots * n; i++) { /* the reference's own initial state */
            b->rstate[i] = spec->kind == OPTIM_ADAGRAD ? spec->initial_accumulator : 0.0;
            if (random_state) /* or any valid one: every slot may be in [0, 1) */
                b->rstate[i] = b->state[i] = rnd(0.0f, 1.0f);
        }
        for (uint64_t step = first_step; step < first_step + STEPS; step++) {
            for (uint32_t i = 0; i < n; i++)
                b->g[i] = rnd(-1.0f, 1.0f);
            optimizer_step(spec, n, b->w, b->g, b->state, step, b->w_out, b->state_out);
            ref_step(spec, n, b->rw, b->g, b->rstate, step);
            expect_close("w", b->w_out, b->rw, n);
            expect_close("state", b->state_out, b->rstate, slots * n);
            assert_true(optimizer_all_finite(b->w_out, n));
            memcpy(b->w, b->w_out, n * sizeof(float));
            memcpy(b->state, b->state_out, (size_t)slots * n * sizeof(float));
        }
    }
    free(b);
}

static optim_spec spec_of(optim_kind kind) {
    optim_spec s;
    optim_spec_defaults(kind, &s);
    return s;
}

static void test_sgd(void **state) {
    (void)state;
    optim_spec s = spec_of(OPTIM_SGD);
    run_against_reference(&s, 1, false);
    s.lr = 0.1f;
    s.momentum = 0.9f;
    s.weight_decay = 0.01f;
    run_against_reference(&s, 1, false);
    run_against_reference(&s, 50, true);
}

static void test_adagrad(void **state) {
    (void)state;
    optim_spec s = spec_of(OPTIM_ADAGRAD);
    run_against_reference(&s, 1, false);
    s.lr = 0.1f;
    s.weight_decay = 0.05f;
    s.initial_accumulator = 0.1f;
    run_against_reference(&s, 1, false);
    run_against_reference(&s, 7, true);
}

static void test_adam(void **state) {
    (void)state;
    optim_spec s = spec_of(OPTIM_ADAM);
    run_against_reference(&s, 1, false);
    s.lr = 0.01f;
    s.weight_decay = 0.01f;
    s.beta1 = 0.5f;
    s.beta2 = 0.9f;
    run_against_reference(&s, 1, false);
    run_against_reference(&s, 1000, true);
    s.beta1 = 0.0f; /* no momentum: bias correction 1 */
    run_against_reference(&s, 3, true);
}

static void test_ftrl(void **state) {
    (void)state;
    optim_spec s = spec_of(OPTIM_FTRL);
    run_against_reference(&s, 1, false);
    s.lr = 0.1f;
    s.l1 = 0.5f;
    s.l2 = 0.01f;
    s.beta = 0.5f;
    run_against_reference(&s, 1, false);
    run_against_reference(&s, 20, true);
}

/* SGD with momentum 0 still writes its slot: m = g' (= g exactly with no decay). */
static void test_sgd_plain_writes_slot(void **state) {
    (void)state;
    const optim_spec s = spec_of(OPTIM_SGD);
    float w[17], g[17], m[17], w_out[17], m_out[17];
    for (int i = 0; i < 17; i++) {
        w[i] = rnd(-1.0f, 1.0f);
        g[i] = rnd(-1.0f, 1.0f);
        m[i] = 123.0f;
        m_out[i] = NAN;
    }
    optimizer_step(&s, 17, w, g, m, 1, w_out, m_out);
    assert_memory_equal(m_out, g, sizeof(g));
}

/* A step count of 0 (a caller's slip) is read as the first step, not a division by 0. */
static void test_step_zero_is_first(void **state) {
    (void)state;
    const optim_spec s = spec_of(OPTIM_ADAM);
    float w[3] = {0.5f, -0.25f, 1.0f}, g[3] = {0.1f, 0.2f, -0.3f}, st[6] = {0};
    float w0[3], w1[3], st0[6], st1[6];
    optimizer_step(&s, 3, w, g, st, 0, w0, st0);
    optimizer_step(&s, 3, w, g, st, 1, w1, st1);
    assert_memory_equal(w0, w1, sizeof(w0));
    assert_memory_equal(st0, st1, sizeof(st0));
    assert_true(optimizer_all_finite(w0, 3));
}

/* The same step with outputs on top of inputs gives the same bits as out of place. */
static void check_aliasing(const optim_spec *spec, uint32_t n) {
    const uint32_t slots = optim_spec_slots(spec->kind);
    const size_t wb = n * sizeof(float), sb = (size_t)slots * n * sizeof(float);
    float *w = malloc(wb), *g = malloc(wb), *st = malloc(sb ? sb : 1);
    float *w_ref = malloc(wb), *st_ref = malloc(sb ? sb : 1);
    float *w2 = malloc(wb), *g2 = malloc(wb), *st2 = malloc(sb ? sb : 1), *w_out = malloc(wb);
    assert_true(w && g && st && w_ref && st_ref && w2 && g2 && st2 && w_out);
    for (uint32_t i = 0; i < n; i++) {
        w[i] = rnd(-1.0f, 1.0f);
        g[i] = rnd(-1.0f, 1.0f);
    }
    for (uint32_t i = 0; i < slots * n; i++)
        st[i] = rnd(0.0f, 1.0f);
    optimizer_step(spec, n, w, g, st, 3, w_ref, st_ref);

    memcpy(g2, g, wb); /* w_out == g */
    optimizer_step(spec, n, w, g2, st, 3, g2, st2);
    assert_memory_equal(g2, w_ref, wb);
    assert_memory_equal(st2, st_ref, sb);
    memcpy(w2, w, wb); /* w_out == w */
    optimizer_step(spec, n, w2, g, st, 3, w2, st2);
    assert_memory_equal(w2, w_ref, wb);
    assert_memory_equal(st2, st_ref, sb);
    memcpy(st2, st, sb); /* state_out == state */
    optimizer_step(spec, n, w, g, st2, 3, w_out, st2);
    assert_memory_equal(w_out, w_ref, wb);
    assert_memory_equal(st2, st_ref, sb);
    memcpy(w2, w, wb); /* all in place */
    memcpy(st2, st, sb);
    optimizer_step(spec, n, w2, g, st2, 3, w2, st2);
    assert_memory_equal(w2, w_ref, wb);
    assert_memory_equal(st2, st_ref, sb);
    memcpy(g2, g, wb); /* w_out == g and state in place */
    memcpy(st2, st, sb);
    optimizer_step(spec, n, w, g2, st2, 3, g2, st2);
    assert_memory_equal(g2, w_ref, wb);
    assert_memory_equal(st2, st_ref, sb);
    free(w), free(g), free(st), free(w_ref), free(st_ref), free(w2), free(g2), free(st2);
    free(w_out);
}

static void test_aliasing(void **state) {
    (void)state;
    optim_spec specs[4] = {spec_of(OPTIM_SGD), spec_of(OPTIM_ADAGRAD), spec_of(OPTIM_ADAM),
                           spec_of(OPTIM_FTRL)};
    specs[0].momentum = 0.9f;
    specs[0].weight_decay = 0.1f;
    specs[1].weight_decay = 0.1f;
    specs[2].weight_decay = 0.1f;
    specs[3].l1 = 0.3f;
    for (size_t k = 0; k < 4; k++)
        for (size_t s = 0; s < SIZE_COUNT; s++)
            check_aliasing(&specs[k], sizes[s]);
}

static void test_state_init(void **state) {
    (void)state;
    float buf[2 * 17 + 1];
    for (size_t k = 0; k < 4; k++) {
        static const optim_kind kinds[] = {OPTIM_SGD, OPTIM_ADAGRAD, OPTIM_ADAM, OPTIM_FTRL};
        optim_spec s = spec_of(kinds[k]);
        s.initial_accumulator = 0.1f;
        const uint32_t count = optim_spec_slots(kinds[k]) * 17;
        for (size_t i = 0; i < 2 * 17 + 1; i++)
            buf[i] = -7.0f;
        optimizer_state_init(&s, 17, buf);
        for (uint32_t i = 0; i < count; i++)
            assert_true(buf[i] == (kinds[k] == OPTIM_ADAGRAD ? 0.1f : 0.0f));
        assert_true(buf[count] == -7.0f); /* nothing written past the slots */
    }
}

/* FTRL: w is exactly +0 where |z| <= l1, and not 0 elsewhere. */
static void test_ftrl_l1_zeroing(void **state) {
    (void)state;
    optim_spec s = spec_of(OPTIM_FTRL);
    s.l1 = 0.75f;
    float w[1000], g[1000], st[2000];
    memset(w, 0, sizeof(w));
    optimizer_state_init(&s, 1000, st);
    size_t zeros = 0;
    for (uint64_t step = 1; step <= 3; step++) {
        for (int i = 0; i < 1000; i++)
            g[i] = rnd(-1.0f, 1.0f);
        optimizer_step(&s, 1000, w, g, st, step, w, st);
        for (int i = 0; i < 1000; i++) {
            if (fabsf(st[i]) <= s.l1) {
                assert_true(w[i] == 0.0f && !signbit(w[i]));
                zeros++;
            } else {
                assert_true(w[i] != 0.0f && (w[i] < 0.0f) == (st[i] > 0.0f));
            }
        }
    }
    assert_in_range(zeros, 100, 2900); /* both branches taken */
    s.l1 = 10.0f;                      /* |z| <= 3 after 3 steps of |g| <= 1 */
    memset(w, 0, sizeof(w));
    optimizer_state_init(&s, 1000, st);
    for (uint64_t step = 1; step <= 3; step++) {
        optimizer_step(&s, 1000, w, g, st, step, w, st);
        for (int i = 0; i < 1000; i++)
            assert_true(w[i] == 0.0f);
    }
}

static void test_all_finite(void **state) {
    (void)state;
    static const uint64_t lens[] = {1, 3, 17, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 3001};
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    float *v = malloc(3001 * sizeof(float));
    assert_non_null(v);
    assert_true(optimizer_all_finite(v, 0));
    for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
        const uint64_t n = lens[l];
        for (uint64_t i = 0; i < n; i++)
            v[i] = i % 3 == 0 ? FLT_MAX : (i % 3 == 1 ? -1e-40f : -0.0f);
        assert_true(optimizer_all_finite(v, n));
        const uint64_t at[] = {0, n / 2, n - 1, 15, 16, 1023, 1024, 1025, 2047, 2048};
        for (size_t p = 0; p < sizeof(at) / sizeof(at[0]); p++) {
            if (at[p] >= n)
                continue;
            for (size_t b = 0; b < 3; b++) {
                const float keep = v[at[p]];
                v[at[p]] = bad[b];
                if (optimizer_all_finite(v, n))
                    fail_msg("n %lu: %g at %lu not found", (unsigned long)n, (double)bad[b],
                             (unsigned long)at[p]);
                assert_true(optimizer_all_finite(v, at[p])); /* just before it */
                v[at[p]] = keep;
            }
        }
    }
    free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd),
        cmocka_unit_test(test_adagrad),
        cmocka_unit_test(test_adam),
        cmocka_unit_test(test_ftrl),
        cmocka_unit_test(test_sgd_plain_writes_slot),
        cmocka_unit_test(test_step_zero_is_first),
        cmocka_unit_test(test_aliasing),
        cmocka_unit_test(test_state_init),
        cmocka_unit_test(test_ftrl_l1_zeroing),
        cmocka_unit_test(test_all_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
