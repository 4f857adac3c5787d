/* test_safetensors.c: unit tests of the safetensors reader (cmocka).
 *
 * A valid file is built by hand here (header text + data), then fed whole, cut at
 * every length, with every byte flipped, and with each kind of broken header. Every
 * input sits in an exactly sized heap buffer, so the sanitizer build catches any read
 * past the end; the only acceptable answers to damaged input are OK (a flip the
 * format cannot notice, e.g. in the data) and PARSE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "safetensors.h"

/* ------------------------------------------------------------------------------------ */
/* Helpers */

/* A file: 8-byte length of header (padded with spaces to pad_to bytes), header, data. */
static unsigned char *build(const char *header, size_t pad_to, const void *data, size_t data_len,
                            size_t *ret_len) {
    size_t hlen = strlen(header);
    if (pad_to > hlen) {
        hlen = pad_to;
    }
    const size_t len = 8 + hlen + data_len;
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    const uint64_t le = hlen;
    memcpy(buf, &le, 8);
    memset(buf + 8, ' ', hlen);
    memcpy(buf + 8, header, strlen(header));
    if (data_len > 0) {
        memcpy(buf + 8 + hlen, data, data_len);
    }
    *ret_len = len;
    return buf;
}

/* The valid sample: b F32[2] @0, a F32[2,3] @8, s I64 scalar @32, z F32[0] @40. The
 * last byte of data belongs to a tensor, so every truncation must fail. */
static const char *sample_header =
    "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
    "\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[32,40]},"
    "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[40,40]},"
    "\"__metadata__\":{\"format\":\"pt\",\"note\":\"hand-built\"}}";

static unsigned char *sample(size_t *ret_len) {
    unsigned char data[40];
    const float b[2] = {1.5f, -2.0f};
    const float a[6] = {0, 1, 2, 3, 4, 5};
    const int64_t s = -7;
    memcpy(data, b, 8);
    memcpy(data + 8, a, 24);
    memcpy(data + 32, &s, 8);
    return build(sample_header, 0, data, sizeof(data), ret_len);
}

/* Parses a copy of buf[0..len) in an exact-size buffer; returns the status. */
static ps_status parse_copy(const unsigned char *buf, size_t len, char *err, size_t err_len) {
    unsigned char *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0) {
        memcpy(copy, buf, len);
    }
    safetensors *st = NULL;
    const ps_status status = safetensors_open_memory(copy, len, &st, err, err_len);
    if (status == PS_STATUS_OK) {
        /* walk everything it hands out */
        for (size_t i = 0; i < safetensors_count(st); i++) {
            safetensors_tensor t;
            assert_true(safetensors_tensor_at(st, i, &t));
            volatile unsigned char sink = 0;
            for (size_t k = 0; k < t.nbytes; k++) {
                sink ^= ((const unsigned char *)t.data)[k];
            }
            (void)sink;
        }
    } else {
        assert_null(st);
    }
    safetensors_destroy(st);
    free(copy);
    return status;
}

/* Expects PARSE for a header (with 16 data bytes) and a message containing `want`. */
static void expect_bad_header(const char *header, const char *want) {
    unsigned char data[16] = {0};
    size_t len;
    unsigned char *buf = build(header, 0, data, sizeof(data), &len);
    char err[512] = "";
    const ps_status status = parse_copy(buf, len, err, sizeof(err));
    if (status != PS_STATUS_PARSE) {
        fail_msg("header %s: got %s, want PARSE", header, ps_status_name(status));
    }
    if (strstr(err, want) == NULL) {
        fail_msg("header %s: message \"%s\" lacks \"%s\"", header, err, want);
    }
    free(buf);
}

/* ------------------------------------------------------------------------------------ */
/* Tests */

static void test_parse_valid(void **state) {
    (void)state;
    size_t len;
    unsigned char *buf = sample(&len);
    safetensors *st = NULL;
    char err[256] = "";
    assert_int_equal(safetensors_open_memory(buf, len, &st, err, sizeof(err)), PS_STATUS_OK);
    assert_int_equal(safetensors_count(st), 4);

    static const char *const names[] = {"a", "b", "s", "z"}; /* sorted by name */
    for (size_t i = 0; i < 4; i++) {
        safetensors_tensor t;
        assert_true(safetensors_tensor_at(st, i, &t));
        assert_string_equal(t.name, names[i]);
    }
    safetensors_tensor t;
    assert_false(safetensors_tensor_at(st, 4, &t));

    assert_true(safetensors_find(st, "a", &t));
    assert_int_equal(t.dtype, SAFETENSORS_DTYPE_F32);
    assert_int_equal(t.ndims, 2);
    assert_int_equal(t.dims[0], 2);
    assert_int_equal(t.dims[1], 3);
    assert_int_equal(t.count, 6);
    assert_int_equal(t.nbytes, 24);
    float a[6];
    memcpy(a, t.data, sizeof(a));
    for (int i = 0; i < 6; i++) {
        assert_true(a[i] == (float)i);
    }
    assert_ptr_equal(t.data, buf + len - 40 + 8);

    assert_true(safetensors_find(st, "s", &t));
    assert_int_equal(t.dtype, SAFETENSORS_DTYPE_I64);
    assert_int_equal(t.ndims, 0);
    assert_int_equal(t.count, 1);
    int64_t s;
    memcpy(&s, t.data, 8);
    assert_int_equal(s, -7);

    assert_true(safetensors_find(st, "z", &t));
    assert_int_equal(t.count, 0);
    assert_int_equal(t.nbytes, 0);

    assert_false(safetensors_find(st, "c", &t));
    assert_false(safetensors_find(st, "", &t));
    assert_string_equal(safetensors_metadata(st, "format"), "pt");
    assert_string_equal(safetensors_metadata(st, "note"), "hand-built");
    assert_null(safetensors_metadata(st, "missing"));

    safetensors_destroy(st);
    safetensors_destroy(NULL);
    free(buf);
}

static void test_padding_gaps_and_empty(void **state) {
    (void)state;
    /* header padded with spaces to 64 bytes; a gap before the tensor; trailing bytes */
    unsigned char data[16] = {0};
    size_t len;
    unsigned char *buf = build("{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
                               64, data, sizeof(data), &len);
    assert_int_equal(parse_copy(buf, len, NULL, 0), PS_STATUS_OK);
    free(buf);

    /* "__metadata__": null means none */
    buf = build("{\"__metadata__\":null}", 0, NULL, 0, &len);
    assert_int_equal(parse_copy(buf, len, NULL, 0), PS_STATUS_OK);
    free(buf);

    /* no tensors at all */
    buf = build("{}", 0, NULL, 0, &len);
    safetensors *st = NULL;
    assert_int_equal(safetensors_open_memory(buf, len, &st, NULL, 0), PS_STATUS_OK);
    assert_int_equal(safetensors_count(st), 0);
    safetensors_destroy(st);
    free(buf);
}

static void test_every_truncation_fails(void **state) {
    (void)state;
    size_t len;
    unsigned char *buf = sample(&len);
    for (size_t cut = 0; cut < len; cut++) {
        char err[256] = "";
        const ps_status status = parse_copy(buf, cut, err, sizeof(err));
        if (status != PS_STATUS_PARSE) {
            fail_msg("truncated to %zu of %zu bytes: got %s, want PARSE", cut, len,
                     ps_status_name(status));
        }
        assert_true(err[0] != '\0');
    }
    free(buf);
}

static void test_every_byte_flip_is_safe(void **state) {
    (void)state;
    size_t len;
    unsigned char *buf = sample(&len);
    static const unsigned char flips[] = {0x01, 0x20, 0x80, 0xff};
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            buf[pos] ^= flips[f];
            const ps_status status = parse_copy(buf, len, NULL, 0);
            if (status != PS_STATUS_OK && status != PS_STATUS_PARSE) {
                fail_msg("byte %zu ^ 0x%02x: got %s", pos, flips[f], ps_status_name(status));
            }
            buf[pos] ^= flips[f];
        }
    }
    free(buf);
}

static void test_random_bytes_are_safe(void **state) {
    (void)state;
    uint64_t x = 7;
    for (int round = 0; round < 2000; round++) {
        unsigned char buf[96];
        const size_t len = (size_t)(round % 96);
        for (size_t i = 0; i < len; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (unsigned char)(x >> 56);
        }
        if (len >= 8 && round % 2 == 0) { /* a plausible header length, random JSON */
            const uint64_t hl = len - 8 - (round % 5);
            memcpy(buf, &hl, 8);
        }
        const ps_status status = parse_copy(buf, len, NULL, 0);
        assert_true(status == PS_STATUS_OK || status == PS_STATUS_PARSE);
    }
}

static void test_header_length_out_of_range(void **state) {
    (void)state;
    size_t len;
    unsigned char *buf = sample(&len);
    char err[256];
    uint64_t hl = len; /* past the end */
    memcpy(buf, &hl, 8);
    assert_int_equal(parse_copy(buf, len, err, sizeof(err)), PS_STATUS_PARSE);
    assert_non_null(strstr(err, "runs past the end"));
    hl = UINT64_MAX; /* would wrap a careless 8 + hl */
    memcpy(buf, &hl, 8);
    assert_int_equal(parse_copy(buf, len, err, sizeof(err)), PS_STATUS_PARSE);
    assert_non_null(strstr(err, "exceeds"));
    hl = 0; /* empty header */
    memcpy(buf, &hl, 8);
    assert_int_equal(parse_copy(buf, len, err, sizeof(err)), PS_STATUS_PARSE);
    assert_non_null(strstr(err, "not valid JSON"));
    free(buf);
}

static void test_bad_headers(void **state) {
    (void)state;
    expect_bad_header("{\"a\": ", "not valid JSON");
    expect_bad_header("[1, 2]", "not an object");
    expect_bad_header("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                      "unknown dtype \"F33\"");
    expect_bad_header("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}",
                      "unknown dtype");
    expect_bad_header("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", "lacks \"dtype\"");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "lacks \"shape\"");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "lacks \"data_offsets\"");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}",
                      "not a list");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
                      "shape[0] is not a non-negative integer");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}",
                      "shape[0] is not a non-negative integer");
    expect_bad_header(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
        "at most 8");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
                      "\"data_offsets\":[0,4]}}",
                      "overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,1073741824],"
                      "\"data_offsets\":[0,4]}}",
                      "byte count overflows");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",
                      "data_offsets must be");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}",
                      "data_offsets must be");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0-4\"}}",
                      "data_offsets must be");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}",
                      "outside");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}",
                      "outside");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,"
                      "18446744073709551615]}}",
                      "not valid JSON"); /* past json_int_t */
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}",
                      "needs 8 bytes, but data_offsets span 12");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                      "overlap");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      "duplicate");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
                      "\"extra\":1}}",
                      "unknown field \"extra\"");
    expect_bad_header("{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                      "empty name");
    expect_bad_header("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                      "not valid JSON");
    expect_bad_header("{\"a\":5}", "not an object");
    expect_bad_header("{\"__metadata__\":[1]}", "\"__metadata__\" must be an object");
    expect_bad_header("{\"__metadata__\":{\"k\":1}}", "value for \"k\" is not a string");
}

static void test_open_file(void **state) {
    (void)state;
    char path[] = "/tmp/test_safetensors_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len;
    unsigned char *buf = sample(&len);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);

    safetensors *st = NULL;
    char err[512] = "";
    assert_int_equal(safetensors_open_file(path, &st, err, sizeof(err)), PS_STATUS_OK);
    safetensors_tensor t;
    assert_true(safetensors_find(st, "b", &t));
    float b[2];
    memcpy(b, t.data, sizeof(b));
    assert_true(b[0] == 1.5f && b[1] == -2.0f);
    safetensors_destroy(st);

    /* truncated on disk: PARSE, and the message names the file */
    assert_int_equal(truncate(path, (off_t)len - 1), 0);
    st = NULL;
    assert_int_equal(safetensors_open_file(path, &st, err, sizeof(err)), PS_STATUS_PARSE);
    assert_null(st);
    assert_non_null(strstr(err, path));
    assert_int_equal(truncate(path, 3), 0);
    assert_int_equal(safetensors_open_file(path, &st, err, sizeof(err)), PS_STATUS_PARSE);
    assert_int_equal(truncate(path, 0), 0);
    assert_int_equal(safetensors_open_file(path, &st, err, sizeof(err)), PS_STATUS_PARSE);
    unlink(path);

    assert_int_equal(safetensors_open_file(path, &st, err, sizeof(err)), PS_STATUS_IO);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(safetensors_open_file("/tmp", &st, err, sizeof(err)), PS_STATUS_IO);
    assert_null(st);
    free(buf);
}

static void test_dtypes(void **state) {
    (void)state;
    assert_string_equal(safetensors_dtype_name(SAFETENSORS_DTYPE_BF16), "BF16");
    assert_int_equal(safetensors_dtype_size(SAFETENSORS_DTYPE_BF16), 2);
    assert_int_equal(safetensors_dtype_size(SAFETENSORS_DTYPE_F64), 8);
    assert_int_equal(safetensors_dtype_size(SAFETENSORS_DTYPE_BOOL), 1);
    assert_string_equal(safetensors_dtype_name((safetensors_dtype)99), "?");
    assert_int_equal(safetensors_dtype_size((safetensors_dtype)99), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_padding_gaps_and_empty),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_every_byte_flip_is_safe),
        cmocka_unit_test(test_random_bytes_are_safe),
        cmocka_unit_test(test_header_length_out_of_range),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_open_file),
        cmocka_unit_test(test_dtypes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
