/* test_state_store.c: unit tests of the state file: round trip (with a shard's ring
 * tokens too), ordered writes, and the loader on truncated, garbage and wrong-typed
 * files (cmocka, no process).
 *
 * Old behaviour these would have caught: the loader skipped nodes and models it could
 * not read (a damaged file silently lost members) and took wrong types as zeros; the
 * file was written under the state lock, in whatever order writers got there; a
 * balanced shard's tokens were not kept, so a restart moved its keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hashring_alloc.h"
#include "state_store.h"
#include "test_fixtures.h"
#include "util.h"

typedef struct mods {
    membership *m;
    ring_state *r;
    registry *g;
} mods;

static void state_init(mods *s) {
    membership_opts mo = {.heartbeat_ms = 100};
    assert_int_equal(membership_create(&mo, &s->m), PS_STATUS_OK);
    assert_int_equal(ring_state_create(NULL, &s->r), PS_STATUS_OK);
    assert_int_equal(registry_create(NULL, &s->g), PS_STATUS_OK);
}

static void state_free(mods *s) {
    membership_destroy(s->m);
    ring_state_destroy(s->r);
    registry_destroy(s->g);
}

/* Two shards on the ring, one waiting, a replica, one model; epoch 7. */
static char *sample_text(void) {
    mods s;
    state_init(&s);
    const char *ids[] = {"s1", "s2", "s3", "r1"};
    for (int i = 0; i < 4; i++) {
        membership_node *n = NULL;
        char addr[32];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 7001 + i);
        assert_int_equal(membership_node_add(s.m, ids[i], addr,
                                             i == 3 ? MEMBERSHIP_ROLE_SERVE : MEMBERSHIP_ROLE_SHARD,
                                             (uint32_t)(i + 1), &n),
                         PS_STATUS_OK);
        n->in_ring = i < 2;
        n->waiting = i == 2;
    }
    assert_int_equal(ring_state_restore(s.r, s.m, 7), PS_STATUS_OK);
    tiny_model t;
    tiny_model_init(&t, "tiny", 3);
    Ps__ModelInfo *copy = NULL;
    uint64_t v;
    assert_int_equal(registry_model_copy(&t.info, &copy), PS_STATUS_OK);
    assert_int_equal(registry_model_put(s.g, copy, &v, NULL, 0), PS_STATUS_OK);
    char *text = NULL;
    assert_int_equal(state_store_encode(s.m, s.r, s.g, &text), PS_STATUS_OK);
    state_free(&s);
    return text;
}

/* Fresh modules in *s, loaded from `text` (which must decode). */
static void load_ok(mods *s, const char *text) {
    state_init(s);
    char err[1024] = "";
    ps_status st = state_store_decode(text, strlen(text), s->m, s->r, s->g, err, sizeof err);
    if (st != PS_STATUS_OK)
        fail_msg("decode: %s", err);
}

static void test_round_trip(void **state) {
    (void)state;
    char *text = sample_text();
    mods s;
    load_ok(&s, text);
    assert_int_equal(ring_state_epoch(s.r), 7);
    assert_int_equal(membership_node_count(s.m), 4);
    assert_true(membership_node_find(s.m, "s2")->in_ring);
    assert_int_equal(membership_node_find(s.m, "s2")->weight, 2);
    assert_true(membership_node_find(s.m, "s3")->waiting);
    assert_false(membership_node_find(s.m, "s3")->in_ring);
    assert_int_equal(membership_node_find(s.m, "r1")->role, MEMBERSHIP_ROLE_SERVE);
    assert_false(membership_node_find(s.m, "s1")->alive); /* until it is heard from */
    assert_int_equal(hashring_node_count(ring_state_ring(s.r)), 2);
    assert_int_equal(registry_generation(s.g), 1);
    const Ps__ModelInfo *m = registry_model_find(s.g, "tiny", 0);
    assert_non_null(m);
    assert_int_equal(m->version, 3);
    assert_int_equal(m->n_tensors, 4);
    assert_int_equal(m->tensors[2]->shape[1], 50);
    /* encoding what was decoded gives the same text */
    char *again = NULL;
    assert_int_equal(state_store_encode(s.m, s.r, s.g, &again), PS_STATUS_OK);
    assert_string_equal(again, text);
    free(again);
    state_free(&s);
    free(text);
}

/* A deleted latest version's number is never given again, across a restart: the file
 * keeps the mark (and only when the stored versions do not say it). */
static void test_version_marks_survive(void **state) {
    (void)state;
    char *text = sample_text(); /* tiny v3 */
    assert_null(strstr(text, "version_marks"));
    mods s;
    load_ok(&s, text);
    free(text);
    Ps__ModelInfo *taken = NULL;
    assert_int_equal(registry_model_take(s.g, "tiny", 3, &taken), PS_STATUS_OK);
    ps__model_info__free_unpacked(taken, NULL);
    assert_int_equal(state_store_encode(s.m, s.r, s.g, &text), PS_STATUS_OK);
    assert_non_null(strstr(text, "\"version_marks\""));
    state_free(&s);
    load_ok(&s, text);
    free(text);
    assert_null(registry_model_find(s.g, "tiny", 0));
    tiny_model t;
    tiny_model_init(&t, "tiny", 0);
    Ps__ModelInfo *copy = NULL;
    uint64_t v = 0;
    assert_int_equal(registry_model_copy(&t.info, &copy), PS_STATUS_OK);
    assert_int_equal(registry_model_put(s.g, copy, &v, NULL, 0), PS_STATUS_OK);
    assert_int_equal(v, 4);
    /* v4 stored: the mark says nothing more, and the file leaves it out again */
    assert_int_equal(state_store_encode(s.m, s.r, s.g, &text), PS_STATUS_OK);
    assert_null(strstr(text, "version_marks"));
    free(text);
    state_free(&s);
}

/* Decoding `text` fails with PARSE and a message containing `words`. */
static void damaged(const char *text, size_t len, const char *words) {
    mods s;
    state_init(&s);
    char err[1024] = "";
    assert_int_equal(state_store_decode(text, len, s.m, s.r, s.g, err, sizeof err),
                     PS_STATUS_PARSE);
    if (words && !strstr(err, words))
        fail_msg("message '%s' lacks '%s'", err, words);
    state_free(&s);
}

/* Damaged marks are refused like any other damage. */
static void test_bad_version_marks(void **state) {
    (void)state;
    char *text = sample_text();
    const char *cases[][2] = {
        {"\"version_marks\": [1],", "version_marks"},
        {"\"version_marks\": {\"tiny\": 0},", "version_marks.tiny"},
        {"\"version_marks\": {\"tiny\": \"3\"},", "version_marks.tiny"},
        {"\"version_marks\": {\"tiny\": 4294967296},", "version_marks.tiny"},
        {"\"version_marks\": {\"a b\": 2},", "no model name"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = strlen(text) + strlen(cases[i][0]) + 1;
        char *bad = malloc(len);
        assert_non_null(bad);
        if (bad) /* after the opening brace */
            snprintf(bad, len, "{%s%s", cases[i][0], text + 1);
        damaged(bad, strlen(bad), cases[i][1]);
        free(bad);
    }
    free(text);
}

static void test_truncated_files(void **state) {
    (void)state;
    char *text = sample_text();
    size_t len = strlen(text);
    damaged(text, 0, "the file is empty");
    damaged(text, len / 2, "the file is truncated");
    for (size_t cut = 1; cut < len - 1; cut += 7) /* every length: refused, never a crash */
        damaged(text, cut, "not valid JSON");
    free(text);
}

static void test_garbage_files(void **state) {
    (void)state;
    static const char binary[] = {'\x7f', 'E', 'L', 'F', '\0', '\x01', '\xff', '{'};
    damaged(binary, sizeof binary, "not valid JSON");
    damaged("null", 4, "not valid JSON");
    damaged("[1, 2]", 6, "expected an object at the top, got an array");
    damaged("{}", 2, "format: expected an integer 1..2, got nothing");
    unsigned seed = 12345;
    char noise[512];
    for (int round = 0; round < 200; round++) {
        size_t n = 1 + (size_t)(rand_r(&seed) % (sizeof noise));
        for (size_t i = 0; i < n; i++)
            noise[i] = (char)(rand_r(&seed) & 0xff);
        damaged(noise, n, NULL);
    }
}

#define HEAD "{\"format\": 1, \"epoch\": 3, \"model_generation\": 0, "
#define NODE(fields) "{\"id\": \"s1\", \"addr\": \"h:1\", \"weight\": 1, " fields "}"

static void test_wrong_types(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *words;
    } cases[] = {
        {"{\"format\": 3, \"epoch\": 3, \"model_generation\": 0, \"nodes\": [], \"models\": []}",
         "format: expected an integer 1..2, got 3"},
        {"{\"format\": 1, \"epoch\": \"3\", \"model_generation\": 0, \"nodes\": [], \"models\": "
         "[]}",
         "epoch: expected an integer 0..9223372036854775807, got a string"},
        {"{\"format\": 1, \"epoch\": -1, \"model_generation\": 0, \"nodes\": [], \"models\": []}",
         "epoch: expected an integer 0..9223372036854775807, got -1"},
        {HEAD "\"nodes\": {}, \"models\": []}", "nodes: expected an array, got an object"},
        {HEAD "\"nodes\": [], \"models\": 5}", "models: expected an array, got an integer"},
        {HEAD "\"nodes\": [7], \"models\": []}", "nodes[0]: expected an object, got an integer"},
        {HEAD "\"nodes\": [{\"id\": \"s1\", \"addr\": \"h:1\", \"weight\": \"1\", \"role\": "
              "\"shard\", \"in_ring\": true}], \"models\": []}",
         "nodes[0].weight: expected an integer 1..1000, got a string"},
        {HEAD "\"nodes\": [" NODE("\"role\": \"boss\", \"in_ring\": true") "], \"models\": []}",
         "nodes[0].role: expected \"shard\" or \"serve\""},
        {HEAD "\"nodes\": [" NODE("\"role\": \"shard\", \"in_ring\": 1") "], \"models\": []}",
         "nodes[0].in_ring: expected a boolean, got an integer"},
        {HEAD "\"nodes\": [" NODE("\"role\": \"serve\", \"in_ring\": true") "], \"models\": []}",
         "it is not a shard"},
        {HEAD "\"nodes\": [" NODE("\"role\": \"shard\", \"in_ring\": true") ", " NODE(
             "\"role\": \"shard\", \"in_ring\": false") "], \"models\": []}",
         "nodes[1].id: node s1 is listed twice"},
        {HEAD "\"nodes\": [{\"id\": \"bad id\", \"addr\": \"h:1\", \"weight\": 1, \"role\": "
              "\"shard\", \"in_ring\": false}], \"models\": []}",
         "is not valid"},
        {HEAD "\"nodes\": [], \"models\": [{\"name\": \"m\", \"version\": 1, \"config_json\": "
              "\"{}\", \"tensors\": [{\"name\": \"t\", \"dtype\": \"FP32\", \"shape\": \"2\", "
              "\"chunk_floats\": 2, \"chunks\": 1}]}]}",
         "models[0].tensors[0].shape: expected an array, got a string"},
        {HEAD "\"nodes\": [], \"models\": [{\"name\": \"m\", \"version\": 1, \"config_json\": "
              "\"{}\", \"tensors\": [{\"name\": \"t\", \"dtype\": \"FP32\", \"shape\": [2], "
              "\"chunk_floats\": 2, \"chunks\": 5}]}]}",
         "models[0]: tensor t: 5 chunks of 2 floats do not cover 2 floats"},
        {HEAD "\"nodes\": [], \"models\": [{\"name\": \"m\", \"version\": 0}]}",
         "models[0].version: expected an integer 1..4294967295, got 0"},
        {HEAD "\"nodes\": [], \"models\": [], \"epoch\": 4}", "duplicate object key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        damaged(cases[i].text, strlen(cases[i].text), cases[i].words);
}

#define HEAD2 "{\"format\": 2, \"epoch\": 3, \"model_generation\": 0, "
#define TOKENS(t) NODE("\"role\": \"shard\", \"in_ring\": true, \"tokens\": " t)

static void test_bad_tokens(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *words;
    } cases[] = {
        {HEAD "\"nodes\": [" TOKENS("\"0000000000000001\"") "], \"models\": []}",
         "nodes[0].tokens: tokens need format 2"},
        {HEAD2 "\"nodes\": [" TOKENS("7") "], \"models\": []}",
         "nodes[0].tokens: expected a string, got an integer"},
        {HEAD2 "\"nodes\": [" TOKENS("\"\"") "], \"models\": []}",
         "expected 1..4194304 tokens of 16 hex digits each, got 0 characters"},
        {HEAD2 "\"nodes\": [" TOKENS("\"00000000000000010\"") "], \"models\": []}",
         "got 17 characters"},
        {HEAD2 "\"nodes\": [" TOKENS("\"000000000000000G\"") "], \"models\": []}",
         "character 15 is not a lowercase hex digit"},
        {HEAD2 "\"nodes\": [" TOKENS("\"00000000000000020000000000000002\"") "], \"models\": []}",
         "token 1 is not above the one before"},
        {HEAD2 "\"nodes\": [" NODE("\"role\": \"serve\", \"in_ring\": false, \"tokens\": "
                                   "\"0000000000000001\"") "], \"models\": []}",
         "only a shard has ring tokens"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        damaged(cases[i].text, strlen(cases[i].text), cases[i].words);
}

/* A shard's tokens survive the file: the ring rebuilt from it is the same, byte for
 * byte, and a file without tokens is still written as format 1. */
static void test_tokens_round_trip(void **state) {
    (void)state;
    mods s;
    state_init(&s);
    membership_node *n = NULL;
    assert_int_equal(membership_node_add(s.m, "s1", "127.0.0.1:7001", MEMBERSHIP_ROLE_SHARD, 1, &n),
                     PS_STATUS_OK);
    n->in_ring = true;
    assert_int_equal(ring_state_rebuild(s.r, s.m), PS_STATUS_OK);
    char *text = NULL;
    assert_int_equal(state_store_encode(s.m, s.r, s.g, &text), PS_STATUS_OK);
    assert_non_null(strstr(text, "\"format\": 1"));
    assert_null(strstr(text, "tokens"));
    free(text);
    assert_int_equal(membership_node_add(s.m, "s2", "127.0.0.1:7002", MEMBERSHIP_ROLE_SHARD, 2, &n),
                     PS_STATUS_OK);
    uint64_t *tokens = NULL;
    uint32_t n_tokens = 0;
    assert_int_equal(hashring_alloc_tokens(ring_state_ring(s.r), "s2", 2, &tokens, &n_tokens),
                     PS_STATUS_OK);
    assert_int_equal(n_tokens, 2 * HASHRING_DEFAULT_VNODES);
    membership_node_tokens_set(n, tokens, n_tokens);
    n->in_ring = true;
    assert_int_equal(ring_state_rebuild(s.r, s.m), PS_STATUS_OK);
    assert_true(ring_state_share(s.r, "s2") > 2.0 / 3 - 1e-9);
    assert_int_equal(state_store_encode(s.m, s.r, s.g, &text), PS_STATUS_OK);
    assert_non_null(strstr(text, "\"format\": 2"));

    mods t;
    state_init(&t);
    char err[1024] = "";
    assert_int_equal(state_store_decode(text, strlen(text), t.m, t.r, t.g, err, sizeof err),
                     PS_STATUS_OK);
    const membership_node *got = membership_node_find(t.m, "s2");
    assert_int_equal(got->n_tokens, n_tokens);
    assert_memory_equal(got->tokens, tokens, n_tokens * sizeof *tokens);
    assert_null(membership_node_find(t.m, "s1")->tokens);
    uint8_t *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    assert_int_equal(ring_state_serialize(s.r, &a, &la), PS_STATUS_OK);
    assert_int_equal(ring_state_serialize(t.r, &b, &lb), PS_STATUS_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la); /* the same ring in every process that loads it */
    char *again = NULL;
    assert_int_equal(state_store_encode(t.m, t.r, t.g, &again), PS_STATUS_OK);
    assert_string_equal(again, text);
    free(again);
    free(a);
    free(b);
    free(text);
    state_free(&t);
    state_free(&s);
}

static void test_load_names_the_file(void **state) {
    (void)state;
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/test_state_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/coordinator.json", dir);
    state_store_opts o = {.path = path};
    state_store *store = NULL;
    assert_int_equal(state_store_create(&o, &store), PS_STATUS_OK);
    mods s;
    state_init(&s);
    char err[2048] = "";
    /* no file: a new cluster */
    assert_int_equal(state_store_load(store, s.m, s.r, s.g, err, sizeof err), PS_STATUS_OK);
    assert_int_equal(membership_node_count(s.m), 0);
    assert_int_equal(ps_write_file_atomic(path, "{\"format\": 1, \"ep", 17), PS_STATUS_OK);
    assert_int_equal(state_store_load(store, s.m, s.r, s.g, err, sizeof err), PS_STATUS_PARSE);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "truncated"));
    assert_non_null(strstr(err, "move it away to start an empty cluster"));
    state_free(&s);
    state_store_destroy(store);
    unlink(path);
    rmdir(dir);
}

/* A disk that records what it was asked to write. */
typedef struct disk {
    int writes;
    char last[64];
} disk;

static ps_status record_write(void *arg, const char *path, const void *data, size_t len) {
    (void)path;
    disk *d = arg;
    d->writes++;
    snprintf(d->last, sizeof d->last, "%.*s", (int)len, (const char *)data);
    return PS_STATUS_OK;
}

static void test_writes_never_go_back(void **state) {
    (void)state;
    disk d = {0};
    state_store_opts o = {.path = "unused", .write = record_write, .write_arg = &d};
    state_store *store = NULL;
    assert_int_equal(state_store_create(&o, &store), PS_STATUS_OK);
    bool written = false;
    assert_int_equal(state_store_write(store, 2, "snapshot 2", &written), PS_STATUS_OK);
    assert_true(written);
    /* an older snapshot that arrives late is dropped */
    assert_int_equal(state_store_write(store, 1, "snapshot 1", &written), PS_STATUS_OK);
    assert_false(written);
    assert_int_equal(state_store_write(store, 2, "snapshot 2 again", &written), PS_STATUS_OK);
    assert_false(written);
    assert_int_equal(state_store_write(store, 3, "snapshot 3", NULL), PS_STATUS_OK);
    assert_int_equal(d.writes, 2);
    assert_string_equal(d.last, "snapshot 3");
    state_store_destroy(store);
    state_store_destroy(NULL);
    state_store_opts no_path = {.path = ""};
    assert_int_equal(state_store_create(&no_path, &store), PS_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),          cmocka_unit_test(test_version_marks_survive),
        cmocka_unit_test(test_bad_version_marks),   cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_garbage_files),       cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_load_names_the_file), cmocka_unit_test(test_writes_never_go_back),
        cmocka_unit_test(test_bad_tokens),          cmocka_unit_test(test_tokens_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
