/* test_model_backend.c: the backend the executor's tests run on (see
 * test_model_backend.h). */
#include "test_model_backend.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static kernels_backend *opened; /* the tests' one backend (NULL: cpu, the model's own) */

void test_model_backend_open(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "cpu";
    if (strcmp(name, "cpu") == 0) {
        return;
    }
    char err[512] = "";
    const kernels_backend_open_opts opts = {.module_dir = getenv("PS_KERNELS_MODULE_DIR")};
    if (kernels_backend_open(name, &opts, &opened, err, sizeof(err)) != PS_STATUS_OK) {
        fprintf(stderr, "cannot open backend %s: %s\n", name, err);
        exit(1);
    }
    fprintf(stderr, "executor tests on backend %s (%s memory)\n", name,
            kernels_backend_host_memory(opened) ? "host" : "device");
}

kernels_backend *test_model_backend(void) {
    return opened;
}

bool test_model_backend_device(void) {
    return opened != NULL && !kernels_backend_host_memory(opened);
}

void test_model_backend_close(void) {
    kernels_backend_destroy(opened);
    opened = NULL;
}

void test_model_sync(model *m) {
    char err[512] = "";
    if (model_params_sync(m, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("model_params_sync: %s", err);
    }
}

void test_model_param_written(model *m, const char *name) {
    size_t count = 0;
    assert_int_equal(model_param(m, name, NULL, &count), PS_STATUS_OK);
    assert_int_equal(model_param_mark(m, name, 0, count), PS_STATUS_OK);
    test_model_sync(m);
}

model_config *test_config_sq(const char *sq) {
    char *t = strdup(sq);
    assert_non_null(t);
    for (char *p = t; *p != '\0'; p++) {
        *p = *p == '\'' ? '"' : *p;
    }
    model_config *cfg = NULL;
    char err[512] = "";
    if (model_config_parse(t, strlen(t), &cfg, err, sizeof(err)) != PS_STATUS_OK) {
        fail_msg("config: %s", err);
    }
    free(t);
    return cfg;
}
