/* test_image.c: unit tests of the image records (image.h): chunk and rows images
 * round-trip through encode and decode, and a decoder refuses every malformed length,
 * count, kind, reserved byte, name and truncation, naming what is wrong. */
#include "test_image.h"

#include <math.h>
#include <stdio.h>

/* An encoded record in an 8-byte aligned buffer. */
typedef struct rec_buf {
    uint64_t *mem;
    size_t len;
} rec_buf;

static rec_buf flatten(const image_encoded *e) {
    rec_buf b = {.mem = calloc(e->len / 8 + 2, 8), .len = e->len};
    assert_non_null(b.mem);
    image_encoded_copy(e, (uint8_t *)b.mem);
    return b;
}

static float g_values[1000], g_state[2000];
static uint64_t g_ids[10], g_steps[10];

static image_chunk sample_chunk(optim_kind kind, const char *name) {
    for (int i = 0; i < 1000; i++)
        g_values[i] = (float)i * 0.5f;
    for (int i = 0; i < 2000; i++)
        g_state[i] = (float)i * -0.25f;
    return (image_chunk){.key = 0x1122334455667788ull,
                         .version = 42,
                         .len = 1000,
                         .name = name,
                         .values = g_values,
                         .kind = kind,
                         .steps = kind ? 7 : 0,
                         .state = kind ? g_state : NULL};
}

static image_rows sample_rows(optim_kind kind) {
    for (int i = 0; i < 10; i++) {
        g_ids[i] = 1000 + (uint64_t)i * 7;
        g_steps[i] = (uint64_t)i;
    }
    for (int i = 0; i < 2000; i++)
        g_state[i] = (float)i * 0.125f;
    return (image_rows){.model = "model",
                        .table = "ta",
                        .spec = ti_spec(kind, 8),
                        .n = 10,
                        .ids = g_ids,
                        .steps = g_steps,
                        .values = g_values,
                        .state = kind ? g_state : NULL};
}

static void test_chunk_round_trip(void **state) {
    (void)state;
    const optim_kind kinds[] = {OPTIM_NONE, OPTIM_SGD, OPTIM_ADAM};
    const char *names[] = {"", "m/w#3", "a-name-of-exactly-16"};
    for (int k = 0; k < 3; k++) {
        image_chunk c = sample_chunk(kinds[k], names[k]);
        image_encoded e;
        assert_int_equal(image_encode_chunk(&c, &e, NULL, 0), PS_STATUS_OK);
        rec_buf b = flatten(&e);
        assert_int_equal(b.len % 8, 0);
        uint64_t len = 0;
        assert_int_equal(image_record_len((uint8_t *)b.mem, 40, &len), PS_STATUS_OK);
        assert_int_equal(len, b.len);
        image_record r;
        assert_int_equal(image_decode((uint8_t *)b.mem, b.len, &r, NULL, 0), PS_STATUS_OK);
        assert_int_equal(r.kind, IMAGE_KIND_CHUNK);
        assert_int_equal(r.chunk.key, c.key);
        assert_int_equal(r.chunk.version, 42);
        assert_int_equal(r.chunk.len, 1000);
        assert_string_equal(r.chunk.name, names[k]);
        assert_int_equal(r.chunk.kind, kinds[k]);
        assert_int_equal(r.chunk.steps, c.steps);
        assert_memory_equal(r.chunk.values, g_values, 4000);
        uint32_t sf = 1000 * optim_spec_slots(kinds[k]);
        if (sf)
            assert_memory_equal(r.chunk.state, g_state, sf * 4);
        else
            assert_null(r.chunk.state);
        free(b.mem);
    }
}

static void test_rows_round_trip(void **state) {
    (void)state;
    const optim_kind kinds[] = {OPTIM_NONE, OPTIM_ADAGRAD, OPTIM_FTRL};
    for (int k = 0; k < 3; k++) {
        image_rows rows = sample_rows(kinds[k]);
        image_encoded e;
        assert_int_equal(image_encode_rows(&rows, &e, NULL, 0), PS_STATUS_OK);
        rec_buf b = flatten(&e);
        image_record r;
        assert_int_equal(image_decode((uint8_t *)b.mem, b.len, &r, NULL, 0), PS_STATUS_OK);
        assert_int_equal(r.kind, IMAGE_KIND_ROWS);
        assert_string_equal(r.rows.model, "model");
        assert_string_equal(r.rows.table, "ta");
        assert_int_equal(r.rows.spec.dim, rows.spec.dim);
        assert_int_equal(r.rows.spec.init, rows.spec.init);
        assert_true(r.rows.spec.init_scale == rows.spec.init_scale);
        assert_int_equal(r.rows.spec.seed, rows.spec.seed);
        assert_int_equal(r.rows.spec.optimizer, rows.spec.optimizer);
        assert_int_equal(r.rows.n, 10);
        assert_memory_equal(r.rows.ids, g_ids, sizeof g_ids);
        assert_memory_equal(r.rows.steps, g_steps, sizeof g_steps);
        assert_memory_equal(r.rows.values, g_values, 80 * 4);
        uint32_t slots = optim_spec_slots(kinds[k]);
        if (slots)
            assert_memory_equal(r.rows.state, g_state, 80 * slots * 4);
        else
            assert_null(r.rows.state);
        free(b.mem);
    }
}

/* Decoding b after `edit` changes it must fail with PARSE and a message. */
static void expect_refused(const rec_buf *b, size_t at, size_t width, uint64_t value) {
    rec_buf c = {.mem = malloc(b->len + 8), .len = b->len};
    assert_non_null(c.mem);
    memcpy(c.mem, b->mem, b->len);
    memcpy((uint8_t *)c.mem + at, &value, width);
    image_record r;
    char err[300] = "";
    assert_int_equal(image_decode((uint8_t *)c.mem, c.len, &r, err, sizeof err), PS_STATUS_PARSE);
    assert_true(strlen(err) > 10);
    free(c.mem);
}

static void test_malformed_chunks_are_refused(void **state) {
    (void)state;
    image_chunk c = sample_chunk(OPTIM_ADAM, "m/w#0"); /* name at 40..45, pad to 48 */
    image_encoded e;
    assert_int_equal(image_encode_chunk(&c, &e, NULL, 0), PS_STATUS_OK);
    rec_buf b = flatten(&e);
    expect_refused(&b, 0, 1, 9);                          /* kind */
    expect_refused(&b, 1, 1, 2);                          /* format */
    expect_refused(&b, 2, 1, 5);                          /* optimizer kind */
    expect_refused(&b, 2, 1, OPTIM_SGD);                  /* state size then wrong */
    expect_refused(&b, 3, 1, 1);                          /* reserved */
    expect_refused(&b, 4, 4, 0);                          /* len 0 */
    expect_refused(&b, 4, 4, 999);                        /* len: total differs */
    expect_refused(&b, 4, 4, IMAGE_MAX_CHUNK_FLOATS + 1); /* past the limit */
    expect_refused(&b, 4, 4, UINT32_MAX);
    expect_refused(&b, 32, 4, 1000);                     /* state floats */
    expect_refused(&b, 32, 4, UINT32_MAX);               /* state floats */
    expect_refused(&b, 36, 2, IMAGE_MAX_NAME_BYTES + 1); /* name length past the limit */
    expect_refused(&b, 36, 2, 9);                        /* name length: total differs */
    expect_refused(&b, 38, 2, 1);                        /* reserved */
    expect_refused(&b, 42, 1, 0);                        /* a NUL inside the name */
    expect_refused(&b, 46, 1, 'x');                      /* padding set */
    image_record r;
    for (size_t len = 0; len < b.len; len += len < 64 ? 1 : 997) /* every truncation */
        assert_int_equal(image_decode((uint8_t *)b.mem, len, &r, NULL, 0), PS_STATUS_PARSE);
    assert_int_equal(image_decode((uint8_t *)b.mem, b.len + 8, &r, NULL, 0), PS_STATUS_PARSE);
    uint8_t *odd = (uint8_t *)malloc(b.len + 8) + 4; /* not 8-byte aligned */
    memcpy(odd, b.mem, b.len);
    assert_int_equal(image_decode(odd, b.len, &r, NULL, 0), PS_STATUS_INVALID_ARGUMENT);
    free(odd - 4);
    free(b.mem);
}

static void test_malformed_rows_are_refused(void **state) {
    (void)state;
    image_rows rows =
        sample_rows(OPTIM_ADAM); /* names "model" "ta" at 32..39, one byte of padding */
    image_encoded e;
    assert_int_equal(image_encode_rows(&rows, &e, NULL, 0), PS_STATUS_OK);
    rec_buf b = flatten(&e);
    expect_refused(&b, 2, 1, 9);                   /* optimizer kind */
    expect_refused(&b, 2, 1, OPTIM_NONE);          /* total then differs */
    expect_refused(&b, 3, 1, 7);                   /* init kind */
    expect_refused(&b, 4, 4, 0);                   /* dim 0 */
    expect_refused(&b, 4, 4, TABLE_MAX_DIM + 1);   /* dim past the limit */
    expect_refused(&b, 4, 4, 9);                   /* dim: total differs */
    expect_refused(&b, 16, 4, 0x7fc00000);         /* init scale NaN */
    expect_refused(&b, 20, 4, 0);                  /* n 0 */
    expect_refused(&b, 20, 4, 11);                 /* n: total differs */
    expect_refused(&b, 20, 4, IMAGE_MAX_ROWS + 1); /* n past the limit */
    expect_refused(&b, 24, 2, 0);                  /* model name empty */
    expect_refused(&b, 24, 2, ROW_STORE_MAX_NAME_BYTES + 1);
    expect_refused(&b, 26, 2, 0); /* table name empty */
    expect_refused(&b, 26, 2, ROW_STORE_MAX_NAME_BYTES + 1);
    expect_refused(&b, 28, 4, 1);   /* reserved */
    expect_refused(&b, 33, 1, 0);   /* a NUL inside a name */
    expect_refused(&b, 39, 1, 'x'); /* padding set */
    image_record r;
    for (size_t len = 0; len < b.len; len += len < 64 ? 1 : 331)
        assert_int_equal(image_decode((uint8_t *)b.mem, len, &r, NULL, 0), PS_STATUS_PARSE);
    free(b.mem);
}

static void test_encoders_refuse_what_decoders_would(void **state) {
    (void)state;
    image_encoded e;
    char err[300];
    image_chunk c = sample_chunk(OPTIM_ADAM, "x");
    c.len = 0;
    assert_int_equal(image_encode_chunk(&c, &e, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    c = sample_chunk(OPTIM_ADAM, "x");
    c.state = NULL;
    assert_int_equal(image_encode_chunk(&c, &e, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    char long_name[IMAGE_MAX_NAME_BYTES + 2];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    c = sample_chunk(OPTIM_NONE, long_name);
    assert_int_equal(image_encode_chunk(&c, &e, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    long_name[IMAGE_MAX_NAME_BYTES] = '\0'; /* exactly the limit: fine */
    c = sample_chunk(OPTIM_NONE, long_name);
    assert_int_equal(image_encode_chunk(&c, &e, err, sizeof err), PS_STATUS_OK);
    rec_buf b = flatten(&e);
    image_record r;
    assert_int_equal(image_decode((uint8_t *)b.mem, b.len, &r, NULL, 0), PS_STATUS_OK);
    assert_int_equal(strlen(r.chunk.name), IMAGE_MAX_NAME_BYTES);
    free(b.mem);
    image_rows rows = sample_rows(OPTIM_NONE);
    rows.n = IMAGE_MAX_ROWS + 1;
    assert_int_equal(image_encode_rows(&rows, &e, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    rows = sample_rows(OPTIM_NONE);
    rows.spec.dim = 0;
    assert_int_equal(image_encode_rows(&rows, &e, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
    rows = sample_rows(OPTIM_NONE);
    rows.table = "";
    assert_int_equal(image_encode_rows(&rows, &e, err, sizeof err), PS_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_round_trip),
        cmocka_unit_test(test_rows_round_trip),
        cmocka_unit_test(test_malformed_chunks_are_refused),
        cmocka_unit_test(test_malformed_rows_are_refused),
        cmocka_unit_test(test_encoders_refuse_what_decoders_would),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
