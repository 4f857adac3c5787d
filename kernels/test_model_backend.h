/* test_model_backend.h: the backend the executor's tests (test_model*.c) run on, named
 * by their first argument, so that one test program proves the executor on the CPU
 * backend and on the cpudev test module (device memory without a GPU; see
 * test_module_cpudev.h). meson runs each program both ways.
 */
#ifndef PS_KERNELS_TEST_MODEL_BACKEND_H
#define PS_KERNELS_TEST_MODEL_BACKEND_H

#include "model.h"

/* Opens the backend argv[1] names ("cpu" when absent) from $PS_KERNELS_MODULE_DIR;
 * exits the program with a message when it cannot. */
void test_model_backend_open(int argc, char **argv);
/* What to give model_create: NULL for "cpu" (the instance makes its own, as before),
 * else the opened backend. */
kernels_backend *test_model_backend(void);
/* True when the tests run on a device-memory backend. */
bool test_model_backend_device(void);
void test_model_backend_close(void);

/* After writes through model_param's pointer: marks all of `name` and syncs (fails the
 * test on error). */
void test_model_param_written(model *m, const char *name);
/* model_params_sync, failing the test on error. */
void test_model_sync(model *m);
/* Parses a config written with single quotes (turned into JSON's double ones); fails
 * the test with the parser's message when it is refused. */
model_config *test_config_sq(const char *sq);

#endif
