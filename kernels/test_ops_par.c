/* test_ops_par.c: the row and sequence ops on shapes large enough that the CPU backend
 * splits them across its thread pool, special values (inf, NaN, large, denormal, -0)
 * through GELU and softmax, and several threads running ops on one backend at once.
 *
 * Tolerances: those of test_ops_seq.c. Special values: NaN where the reference is
 * NaN, the same infinity where it is infinite, the same signed zero where it is zero
 * (what 0.5f x (1 + erff(x / sqrt 2)) and expf gave before the vectorised code). The
 * special-value and concurrency tests run on host-memory backends (CPU): ops.h does
 * not say what a device backend gives for NaN and infinities.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_ops.h"
#include "test_ref.h"

#define PAR_THREADS 4 /* threads running ops at once in test_concurrent */
#define PAR_ROUNDS 6  /* rounds of ops each of them runs */

static void test_large_shapes(void **state) {
    ops_env *env = ops_env_of(state);
    static const kernels_activation acts[] = {
        KERNELS_ACTIVATION_RELU,
        KERNELS_ACTIVATION_SIGMOID,
        KERNELS_ACTIVATION_TANH,
        KERNELS_ACTIVATION_GELU,
    };
    for (size_t a = 0; a < sizeof(acts) / sizeof(acts[0]); a++) {
        ops_check_activation(env, acts[a], 200003);
    }
    ops_check_softmax(env, 301, 517);
    ops_check_layernorm(env, 1000, 384, 1);
    ops_check_layernorm(env, 301, 200, 0);
    ops_check_attention(env, (kernels_attention_shape){3, 128, 4, 32, 0}, 1, 1); /* MiniLM-like */
    ops_check_attention(env, (kernels_attention_shape){2, 100, 3, 16, 0}, 0, 2);
    ops_check_attention(env, (kernels_attention_shape){5, 64, 2, 24, 0}, 1, 3);
    ops_check_mean_pool(env, 37, 128, 384, 1);
}

/* Whether got is what want (a double reference of special inputs) allows. */
static int special_ok(float got, double want) {
    if (isnan(want)) {
        return isnan(got);
    }
    if (isinf(want) || want == 0.0) {
        return got == want && !signbit(got) == !signbit(want);
    }
    return fabs(got - want) <= 1e-6 + 1e-5 * fabs(want);
}

/* 61 values: each special twice and more, at vector and tail positions. */
static void special_values(float *x, size_t n) {
    static const float specials[] = {
        INFINITY, -INFINITY, NAN,   88.0f,    -88.0f, 88.72f, -88.72f, 1e-45f, -1e-45f,
        1e-39f,   -1e-39f,   0.0f,  -0.0f,    5.54f,  -5.54f, 3.0f,    -3.0f,  10.0f,
        -10.0f,   1.0f,      -1.0f, 1.41421f, -1.5f,  0.5f,   -6.0f,   -5.4f,  3.9e-8f,
    };
    const size_t k = sizeof(specials) / sizeof(specials[0]);
    for (size_t i = 0; i < n; i++) {
        x[i] = specials[(i * 7) % k];
    }
}

static void test_specials(void **state) {
    ops_env *env = ops_env_of(state);
    if (!kernels_backend_host_memory(env->be)) {
        print_message("# specials: not checked on a device backend (ops.h leaves them open)\n");
        return;
    }
    enum { N = 61 };
    float x[N], y[N];
    special_values(x, N);
    static const kernels_activation acts[] = {
        KERNELS_ACTIVATION_RELU,
        KERNELS_ACTIVATION_SIGMOID,
        KERNELS_ACTIVATION_TANH,
        KERNELS_ACTIVATION_GELU,
    };
    for (size_t a = 0; a < sizeof(acts) / sizeof(acts[0]); a++) {
        for (size_t n = 1; n <= N; n += 12) { /* tails of every length, one vector and more */
            assert_int_equal(kernels_op_activation(env->s, acts[a], x, n, y), PS_STATUS_OK);
            for (size_t i = 0; i < n; i++) {
                const double want = ref_act(x[i], acts[a]);
                if (!special_ok(y[i], want)) {
                    fail_msg("activation %d n=%zu: x %a gave %a, want %a", (int)acts[a], n,
                             (double)x[i], (double)y[i], want);
                }
            }
        }
    }
    /* softmax: rows of finite specials, rows with -inf (weight 0), and rows with NaN,
     * +inf or only -inf (all NaN, as expf's softmax gave) */
    static const float row_kind[] = {0.0f, -INFINITY, NAN, INFINITY};
    for (size_t kind = 0; kind < 5; kind++) {
        for (size_t i = 0; i < N; i++) {
            x[i] = isfinite(x[i]) ? x[i] : 1.0f;
            x[i] = kind == 4 ? -INFINITY : (i % 5 == 2 && kind > 0) ? row_kind[kind] : x[i];
        }
        x[N - 1] = kind == 2 ? NAN : x[N - 1]; /* in the tail too */
        double max = -INFINITY, sum = 0;
        for (size_t i = 0; i < N; i++) {
            max = fmax(max, x[i]);
        }
        for (size_t i = 0; i < N; i++) {
            sum += exp(x[i] - max);
        }
        assert_int_equal(kernels_op_softmax(env->s, x, 1, N, y), PS_STATUS_OK);
        for (size_t i = 0; i < N; i++) {
            const double want = exp(x[i] - max) / sum;
            if (!special_ok(y[i], want)) {
                fail_msg("softmax kind %zu: x[%zu] %a gave %a, want %a", kind, i, (double)x[i],
                         (double)y[i], want);
            }
        }
        special_values(x, N);
    }
}

/* ------------------------------------------------------------------------------------ */
/* several threads on one backend */

typedef struct par_case {
    kernels_backend *be;
    const float *x;    /* inputs: 3 * tokens * hidden floats */
    const float *mask; /* [batch, seq] */
    const float *want; /* outputs of GELU (n), attention, layernorm, one after another */
    size_t n;          /* elements of GELU's and layernorm's inputs */
    kernels_attention_shape shape;
    int bad; /* set by the thread: an op failed or differed */
} par_case;

/* GELU, attention and layernorm of c's inputs into out (n + tokens * hidden + n). */
static int par_run(kernels_stream *s, const par_case *c, float *out) {
    const size_t hidden = c->shape.heads * c->shape.head_dim;
    const size_t tokens = c->shape.batch * c->shape.seq;
    const float *x = c->x;
    return kernels_op_activation(s, KERNELS_ACTIVATION_GELU, x, c->n, out) != PS_STATUS_OK ||
           kernels_op_attention(s, &c->shape, x, x + tokens * hidden, x + 2 * tokens * hidden,
                                c->mask, out + c->n) != PS_STATUS_OK ||
           kernels_op_layernorm(s, x, c->n / hidden, hidden, NULL, NULL, 1e-12f,
                                out + c->n + tokens * hidden) != PS_STATUS_OK;
}

static void *par_thread(void *p) {
    par_case *c = p;
    const size_t total =
        2 * c->n + c->shape.batch * c->shape.seq * c->shape.heads * c->shape.head_dim;
    kernels_stream *s = NULL;
    float *out = malloc(total * sizeof(*out));
    if (out == NULL || kernels_stream_create(c->be, &s) != PS_STATUS_OK) {
        c->bad = 1;
        goto done;
    }
    for (int r = 0; r < PAR_ROUNDS && !c->bad; r++) {
        c->bad = par_run(s, c, out);
        for (size_t i = 0; i < total && !c->bad; i++) {
            c->bad = !(fabsf(out[i] - c->want[i]) <= 1e-6f + 1e-5f * fabsf(c->want[i]));
        }
    }
done:
    kernels_stream_destroy(s);
    free(out);
    return NULL;
}

static void test_concurrent(void **state) {
    ops_env *env = ops_env_of(state);
    if (!kernels_backend_host_memory(env->be)) {
        print_message("# concurrent: host-memory backends only\n");
        return;
    }
    par_case c = {.be = env->be, .shape = {2, 128, 4, 32, 32 * 4}};
    const size_t tokens = c.shape.batch * c.shape.seq, hidden = c.shape.ld;
    c.n = tokens * hidden;
    float *x = ops_host_rand(env, 3 * c.n, -3, 3);
    float *mask = malloc(tokens * sizeof(*mask)), *want = malloc((3 * c.n) * sizeof(*want));
    assert_non_null(mask), assert_non_null(want);
    for (size_t i = 0; i < tokens; i++) {
        mask[i] = i % c.shape.seq < 100 ? 1.0f : 0.0f;
    }
    c.x = x, c.mask = mask, c.want = want;
    assert_int_equal(par_run(env->s, &c, want), 0); /* alone first */
    par_case cases[PAR_THREADS];
    pthread_t tid[PAR_THREADS];
    for (int t = 0; t < PAR_THREADS; t++) {
        cases[t] = c;
        assert_int_equal(pthread_create(&tid[t], NULL, par_thread, &cases[t]), 0);
    }
    for (int t = 0; t < PAR_THREADS; t++) {
        pthread_join(tid[t], NULL);
        assert_int_equal(cases[t].bad, 0);
    }
    free(want), free(mask), free(x);
}

const struct CMUnitTest ops_par_tests[] = {
    cmocka_unit_test(test_large_shapes),
    cmocka_unit_test(test_specials),
    cmocka_unit_test(test_concurrent),
};
const size_t ops_par_tests_n = sizeof(ops_par_tests) / sizeof(ops_par_tests[0]);
