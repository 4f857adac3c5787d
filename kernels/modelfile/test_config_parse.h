/* test_config_parse.h: what the config parser's unit tests share: configs written with
 * single quotes (turned into JSON's double ones), parsed, and expected to succeed or to
 * fail with a status and a message fragment. Header-only, tests only. */
#ifndef PS_KERNELS_MODELFILE_TEST_CONFIG_PARSE_H
#define PS_KERNELS_MODELFILE_TEST_CONFIG_PARSE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "model_config.h"

static inline model_config *parse(const char *sq, ps_status *ret_st, char *err, size_t err_len) {
    char *text = strdup(sq);
    assert_non_null(text);
    for (char *p = text; *p != '\0'; p++)
        *p = *p == '\'' ? '"' : *p;
    model_config *cfg = NULL;
    *ret_st = model_config_parse(text, strlen(text), &cfg, err, err_len);
    free(text);
    return cfg;
}

static inline model_config *parse_ok(const char *sq) {
    char err[512] = "";
    ps_status st;
    model_config *cfg = parse(sq, &st, err, sizeof(err));
    if (st != PS_STATUS_OK)
        fail_msg("parse failed: %s: %s", ps_status_name(st), err);
    return cfg;
}

/* The config is refused with `want` and a message holding `fragment`. */
static inline void expect_refused(const char *sq, ps_status want, const char *fragment) {
    char err[512] = "";
    ps_status st;
    model_config *cfg = parse(sq, &st, err, sizeof(err));
    if (st != want || strstr(err, fragment) == NULL)
        fail_msg("config %s: got %s (%s), want %s with \"%s\"", sq, ps_status_name(st), err,
                 ps_status_name(want), fragment);
    assert_null(cfg);
}

/* The config is refused as INVALID_ARGUMENT with a message holding `fragment`. */
static inline void expect_invalid(const char *sq, const char *fragment) {
    expect_refused(sq, PS_STATUS_INVALID_ARGUMENT, fragment);
}

/* d has exactly the ndims dims of want. */
static inline void expect_dims(const model_tensor_desc *d, uint32_t ndims, const int64_t *want) {
    assert_int_equal(d->ndims, ndims);
    for (uint32_t i = 0; i < ndims; i++) {
        if (d->dims[i] != want[i]) {
            fail_msg("%s: dim %u is %lld, want %lld", d->name, i, (long long)d->dims[i],
                     (long long)want[i]);
        }
    }
}

#endif
