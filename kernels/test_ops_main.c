/* test_ops_main.c: the op tests' program and harness (see test_ops.h).
 *
 *   test_ops BACKEND [--require]
 *
 * Opens BACKEND by name (kernels_backend_open; loadable modules from
 * $PS_KERNELS_MODULE_DIR) and runs every op test on it. When the backend cannot run
 * here (UNAVAILABLE: no device, no driver) it exits 77, which meson counts as skipped;
 * so does a backend with no module (NOT_FOUND) unless --require says the module must
 * have been built. So suite 'gpu' runs it with "cuda" on every machine.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_ops.h"

#define EXIT_SKIPPED 77
#define MISMATCHES_SHOWN 5

/* The backend main opened, for the groups' setup (tests get it as their state). */
static ops_env *the_env;

ops_env *ops_env_of(void **state) {
    return (ops_env *)*state;
}

static uint64_t next(ops_env *env) { /* splitmix64 */
    uint64_t z = (env->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

size_t ops_rand_size(ops_env *env, size_t lo, size_t hi) {
    return lo + (size_t)(next(env) % (uint64_t)(hi - lo + 1));
}

float ops_rand_float(ops_env *env, float lo, float hi) {
    const double u = (double)(next(env) >> 11) / (double)(1ULL << 53);
    return (float)(lo + (hi - lo) * u);
}

float *ops_host_rand(ops_env *env, size_t n, float lo, float hi) {
    float *v = malloc(n * sizeof(*v));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        v[i] = ops_rand_float(env, lo, hi);
    }
    return v;
}

float *ops_dev_put(ops_env *env, const float *host, size_t n) {
    void *dev = NULL;
    assert_int_equal(kernels_buffer_alloc(env->be, n * sizeof(float), &dev), PS_STATUS_OK);
    assert_int_equal(kernels_buffer_upload(env->s, dev, host, n * sizeof(float)), PS_STATUS_OK);
    return dev;
}

float *ops_dev_nan(ops_env *env, size_t n) {
    float *host = malloc(n * sizeof(*host));
    assert_non_null(host);
    for (size_t i = 0; i < n; i++) {
        host[i] = NAN;
    }
    float *dev = ops_dev_put(env, host, n);
    free(host);
    return dev;
}

float *ops_dev_get(ops_env *env, const float *dev, size_t n) {
    float *host = malloc(n * sizeof(*host));
    assert_non_null(host);
    assert_int_equal(kernels_buffer_download(env->s, host, dev, n * sizeof(float)), PS_STATUS_OK);
    return host;
}

void ops_dev_free(ops_env *env, void *dev) {
    kernels_buffer_free(env->be, dev);
}

void ops_expect_close(const char *what, const float *got, const double *want, size_t n, double atol,
                      double rtol) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double diff = fabs((double)got[i] - want[i]);
        if (diff <= atol + rtol * fabs(want[i])) { /* false for NaN too */
            continue;
        }
        if (bad < MISMATCHES_SHOWN) {
            print_error("%s: [%zu] got %.9g want %.9g (diff %.3g, allowed %.3g)\n", what, i,
                        (double)got[i], want[i], diff, atol + rtol * fabs(want[i]));
        }
        bad++;
    }
    if (bad > 0) {
        fail_msg("%s: %zu of %zu elements differ (atol %g, rtol %g)", what, bad, n, atol, rtol);
    }
}

void ops_expect_dev(ops_env *env, const char *what, const float *dev, const double *want, size_t n,
                    double atol, double rtol) {
    float *got = ops_dev_get(env, dev, n);
    ops_expect_close(what, got, want, n, atol, rtol);
    free(got);
}

static int group_setup(void **state) {
    *state = the_env;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3 || (argc == 3 && strcmp(argv[2], "--require") != 0)) {
        fprintf(stderr, "usage: %s BACKEND [--require]\n", argv[0]);
        return 2;
    }
    const char *name = argv[1];
    const int require = argc == 3;
    const kernels_backend_open_opts opts = {.module_dir = getenv("PS_KERNELS_MODULE_DIR")};
    ops_env env = {.rng = 1};
    const char *seed = getenv("PS_TEST_SEED");
    if (seed != NULL) {
        env.rng = strtoull(seed, NULL, 0);
    }
    char err[512] = "";
    ps_status st = kernels_backend_open(name, &opts, &env.be, err, sizeof(err));
    if (st == PS_STATUS_UNAVAILABLE || (st == PS_STATUS_NOT_FOUND && !require)) {
        fprintf(stderr, "test_ops: backend %s cannot run here: %s (skipped)\n", name, err);
        return EXIT_SKIPPED;
    }
    if (st != PS_STATUS_OK) {
        fprintf(stderr, "test_ops: backend %s: %s\n", name, err);
        return 1;
    }
    if (kernels_stream_create(env.be, &env.s) != PS_STATUS_OK) {
        fprintf(stderr, "test_ops: backend %s: cannot create a stream\n", name);
        kernels_backend_destroy(env.be);
        return 1;
    }
    printf("# test_ops: backend %s, PS_TEST_SEED=%llu\n", name, (unsigned long long)env.rng);
    the_env = &env;
    const struct {
        const char *name;
        const struct CMUnitTest *tests;
        size_t n;
    } groups[] = {
        {"image", ops_image_tests, ops_image_tests_n},
        {"seq", ops_seq_tests, ops_seq_tests_n},
        {"tensor", ops_tensor_tests, ops_tensor_tests_n},
        {"par", ops_par_tests, ops_par_tests_n},
        {"hostile", ops_hostile_tests, ops_hostile_tests_n},
    };
    int failed = 0;
    for (size_t g = 0; g < sizeof(groups) / sizeof(groups[0]); g++) {
        char group[64];
        snprintf(group, sizeof(group), "%s:%s", name, groups[g].name);
        failed += _cmocka_run_group_tests(group, groups[g].tests, groups[g].n, group_setup, NULL);
    }
    kernels_stream_destroy(env.s);
    kernels_backend_destroy(env.be);
    return failed == 0 ? 0 : 1;
}
