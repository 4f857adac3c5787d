/* test_ops.h: the op tests' harness, shared by test_ops_*.c (cmocka).
 *
 * Like llm.c's dev/cuda checks: every op runs on the backend under test (named on the
 * command line: cpu, or a loadable one such as cuda) through the dispatchers, on its
 * own buffers (allocated, uploaded and downloaded through the interface, so a device
 * backend runs the very same tests), and its output is compared with a plain
 * double-precision reference written in the test files, never the backend's code.
 * A comparison passes when |got - want| <= atol + rtol |want| for every element; the
 * first mismatches are printed (index, got, want) before the test fails. Tolerances
 * are stated per op in the test files; they assume FP32 arithmetic (a backend that
 * would use TF32 or BF16 must not do so under these tests). Shapes are random (a
 * seeded generator: PS_TEST_SEED, printed at start) plus fixed edge cases, odd sizes
 * and size 1 included.
 */
#ifndef PS_KERNELS_TEST_OPS_H
#define PS_KERNELS_TEST_OPS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "backend.h"

/* The backend under test and what the tests share. */
typedef struct ops_env {
    kernels_backend *be; /* the backend under test */
    kernels_stream *s;   /* a stream of it (not the default one) */
    uint64_t rng;        /* the shapes' and values' generator */
} ops_env;

/* The env a test gets (the group state). */
ops_env *ops_env_of(void **state);

/* A uniform random integer in lo..hi (inclusive). */
size_t ops_rand_size(ops_env *env, size_t lo, size_t hi);
/* A uniform random float in [lo, hi). */
float ops_rand_float(ops_env *env, float lo, float hi);
/* Host memory of n floats uniform in [lo, hi) (malloc; fails the test when none). */
float *ops_host_rand(ops_env *env, size_t n, float lo, float hi);

/* Backend memory holding host[n] (alloc + upload). */
float *ops_dev_put(ops_env *env, const float *host, size_t n);
/* Backend memory of n floats, each set to NaN so a value never written shows. */
float *ops_dev_nan(ops_env *env, size_t n);
/* Host memory (malloc) holding dev[n] (download after the ops queued). */
float *ops_dev_get(ops_env *env, const float *dev, size_t n);
void ops_dev_free(ops_env *env, void *dev); /* accepts NULL */

/* Downloads dev[n], compares it with want[n] and fails the test on a mismatch after
 * printing the first ones. `what` names the case in messages. */
void ops_expect_dev(ops_env *env, const char *what, const float *dev, const double *want, size_t n,
                    double atol, double rtol);
/* The same for host memory. */
void ops_expect_close(const char *what, const float *got, const double *want, size_t n, double atol,
                      double rtol);

/* Checks of one op on one shape against its double reference (test_ops_seq.c), also
 * run on large shapes by test_ops_par.c. Values, masks and tolerances as in
 * test_ops_seq.c; mask_kind: 0 none, 1 right padding, 2 random holes, 3 the last
 * sample all padding. */
void ops_check_activation(ops_env *env, kernels_activation act, size_t n);
void ops_check_softmax(ops_env *env, size_t rows, size_t cols);
void ops_check_layernorm(ops_env *env, size_t rows, size_t cols, int affine);
void ops_check_attention(ops_env *env, kernels_attention_shape c, int packed, int mask_kind);
void ops_check_mean_pool(ops_env *env, size_t batch, size_t seq, size_t dim, int with_mask);

/* Each test file's tests (test_ops_main.c runs them as one group per file). */
extern const struct CMUnitTest ops_image_tests[];
extern const size_t ops_image_tests_n;
extern const struct CMUnitTest ops_seq_tests[];
extern const size_t ops_seq_tests_n;
extern const struct CMUnitTest ops_tensor_tests[];
extern const size_t ops_tensor_tests_n;
extern const struct CMUnitTest ops_par_tests[];
extern const size_t ops_par_tests_n;
extern const struct CMUnitTest ops_hostile_tests[];
extern const size_t ops_hostile_tests_n;

#endif
