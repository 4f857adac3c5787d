/* test_rpc.c: the rpc layer against the test service, server and client in one
 * process over loopback: unary, streaming, deadlines, cancellation, metadata, size
 * limits, unknown methods, malformed payloads, raw byte fields, shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>

#include "rpc.h"
#include "testsvc.pb-c.h"
#include "test_proxy.h"
#include "testsvc_impl.h"

typedef struct fixture {
    rpc_server *server;
    rpc_channel *channel;
    char target[64];
    int port;
} fixture;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static fixture *fixture_start_opts(rpc_server_opts opts) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    opts.listen = "127.0.0.1:0";
    opts.threads = 2;
    assert_int_equal(rpc_server_create(&opts, &f->server), PS_STATUS_OK);
    assert_int_equal(testsvc_register(f->server), PS_STATUS_OK);
    assert_int_equal(rpc_server_start(f->server, &f->port), PS_STATUS_OK);
    assert_true(f->port > 0);
    snprintf(f->target, sizeof f->target, "127.0.0.1:%d", f->port);
    assert_int_equal(rpc_channel_create(f->target, NULL, &f->channel), PS_STATUS_OK);
    return f;
}

static fixture *fixture_start_streams(size_t max_message_bytes, int grace_ms, int max_streams) {
    return fixture_start_opts((rpc_server_opts){
        .max_message_bytes = max_message_bytes, .grace_ms = grace_ms, .max_streams = max_streams});
}

static fixture *fixture_start(size_t max_message_bytes, int grace_ms) {
    return fixture_start_streams(max_message_bytes, grace_ms, 0);
}

static void fixture_stop(fixture *f) {
    rpc_channel_destroy(f->channel);
    rpc_server_destroy(f->server);
    free(f);
}

static int setup(void **state) {
    *state = fixture_start(0, 0);
    return 0;
}

static int teardown(void **state) {
    fixture_stop(*state);
    return 0;
}

static ps_status echo(fixture *f, const Pstest__EchoRequest *req, const rpc_call_opts *opts,
                      Pstest__EchoReply **ret, rpc_result *res) {
    ProtobufCMessage *m = NULL;
    ps_status st = rpc_call(f->channel, "/pstest.Test/Echo", &req->base,
                            &pstest__echo_reply__descriptor, opts, &m, res);
    *ret = (Pstest__EchoReply *)m;
    return st;
}

static Pstest__StatsReply *stats(fixture *f) {
    Pstest__StatsRequest req = PSTEST__STATS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    rpc_result res;
    assert_int_equal(rpc_call(f->channel, "/pstest.Test/Stats", &req.base,
                              &pstest__stats_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_OK);
    return (Pstest__StatsReply *)m;
}

/* ---------------------------------------------------------------- unary --- */

static void test_unary_echo(void **state) {
    fixture *f = *state;
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "hello";
    uint8_t data[3] = {1, 2, 3};
    req.data.data = data;
    req.data.len = 3;
    Pstest__EchoReply *reply = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    assert_int_equal(echo(f, &req, &opts, &reply, &res), PS_STATUS_OK);
    assert_int_equal(res.grpc_code, 0);
    assert_string_equal(reply->text, "hello");
    assert_int_equal(reply->data.len, 3);
    assert_memory_equal(reply->data.data, data, 3);
    /* the handler saw the deadline (gRPC sends the timeout rounded up, in coarse units,
     * and the server rounds up to whole ms: a little over 5000 is the same deadline) */
    assert_true(reply->deadline_ms > 0 && reply->deadline_ms <= 5100);
    protobuf_c_message_free_unpacked(&reply->base, NULL);

    /* no deadline: the handler sees none */
    assert_int_equal(echo(f, &req, NULL, &reply, &res), PS_STATUS_OK);
    assert_int_equal(reply->deadline_ms, -1);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
}

static void test_metadata_visible(void **state) {
    fixture *f = *state;
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.metadata_key = "x-test-key";
    rpc_metadata md[] = {{"x-test-key", "some value"}, {"x-other", "x"}};
    rpc_call_opts opts = {.timeout_ms = 5000, .metadata = md, .n_metadata = 2};
    Pstest__EchoReply *reply = NULL;
    assert_int_equal(echo(f, &req, &opts, &reply, NULL), PS_STATUS_OK);
    assert_true(reply->metadata_present);
    assert_string_equal(reply->metadata_value, "some value");
    protobuf_c_message_free_unpacked(&reply->base, NULL);

    req.metadata_key = "x-absent";
    assert_int_equal(echo(f, &req, &opts, &reply, NULL), PS_STATUS_OK);
    assert_false(reply->metadata_present);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
}

static void test_error_status_and_details(void **state) {
    fixture *f = *state;
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "no model named foo";
    req.fail_code = "NOT_FOUND";
    Pstest__EchoReply *reply = NULL;
    rpc_result res;
    assert_int_equal(echo(f, &req, NULL, &reply, &res), PS_STATUS_NOT_FOUND);
    assert_null(reply);
    assert_int_equal(res.grpc_code, 5);
    assert_string_equal(res.details, "no model named foo");

    req.fail_code = "ABORTED"; /* how a stale ring epoch travels */
    assert_int_equal(echo(f, &req, NULL, &reply, &res), PS_STATUS_WRONG_EPOCH);
    assert_int_equal(res.grpc_code, 10);
}

static void test_bytes_fields_as_slices(void **state) {
    fixture *f = *state;
    /* The request's `data` (field 2) travels as its own slice, not packed. */
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "slices";
    size_t n = 3 * 1024 * 1024 + 7;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 31u);
    rpc_bytes_field extra = {.field_number = 2, .data = big, .len = n};
    ProtobufCMessage *m = NULL;
    rpc_result res;
    assert_int_equal(rpc_call_with_bytes(f->channel, "/pstest.Test/Echo", &req.base, &extra, 1,
                                         &pstest__echo_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_OK);
    Pstest__EchoReply *reply = (Pstest__EchoReply *)m;
    assert_string_equal(reply->text, "slices");
    assert_int_equal(reply->data.len, n);
    assert_memory_equal(reply->data.data, big, n);
    protobuf_c_message_free_unpacked(m, NULL);
    free(big);
}

static void test_raw_fields_as_views(void **state) {
    fixture *f = *state;
    /* server side: two occurrences of the raw field arrive as two views, in order */
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "t";
    static const uint8_t a[] = "first", b[] = "second";
    rpc_bytes_field extra[2] = {{.field_number = 2, .data = a, .len = 5},
                                {.field_number = 2, .data = b, .len = 6}};
    ProtobufCMessage *m = NULL;
    rpc_result res;
    assert_int_equal(rpc_call_with_bytes(f->channel, "/pstest.Test/EchoRaw", &req.base, extra, 2,
                                         &pstest__echo_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_OK);
    Pstest__EchoReply *reply = (Pstest__EchoReply *)m;
    assert_string_equal(reply->text, "2");
    assert_int_equal(reply->data.len, 11);
    assert_memory_equal(reply->data.data, "firstsecond", 11);
    protobuf_c_message_free_unpacked(m, NULL);

    /* the raw field with another wire type, and a truncated one: malformed */
    static const uint8_t varint_field[] = {0x10, 0x05};
    static const uint8_t truncated[] = {0x12, 0x09, 'a', 'b'};
    void *out = NULL;
    size_t out_len = 0;
    assert_int_equal(rpc_call_raw(f->channel, "/pstest.Test/EchoRaw", varint_field,
                                  sizeof varint_field, NULL, &out, &out_len, &res),
                     PS_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(res.details, "malformed"));
    assert_int_equal(rpc_call_raw(f->channel, "/pstest.Test/EchoRaw", truncated, sizeof truncated,
                                  NULL, &out, &out_len, &res),
                     PS_STATUS_INVALID_ARGUMENT);

    /* client side: a large reply's raw field stays in the payload as a view */
    Pstest__EchoRequest big = PSTEST__ECHO_REQUEST__INIT;
    big.text = "big";
    big.reply_bytes = 3 * 1024 * 1024;
    rpc_received *received = NULL;
    assert_int_equal(rpc_call_split(f->channel, "/pstest.Test/Echo", &big.base, NULL, 0,
                                    &pstest__echo_reply__descriptor, 2, NULL, &m, &received, &res),
                     PS_STATUS_OK);
    reply = (Pstest__EchoReply *)m;
    assert_string_equal(reply->text, "big");
    assert_int_equal(reply->data.len, 0); /* not unpacked */
    const rpc_bytes_view *views = NULL;
    assert_int_equal(rpc_received_views(received, &views), 1);
    assert_int_equal(views[0].len, big.reply_bytes);
    assert_int_equal(views[0].data[0], 0xab);
    assert_int_equal(views[0].data[views[0].len - 1], 0xab);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_received_free(received);
}

static void test_unknown_method(void **state) {
    fixture *f = *state;
    void *out = NULL;
    size_t out_len = 0;
    rpc_result res;
    assert_int_equal(
        rpc_call_raw(f->channel, "/pstest.Test/NoSuchMethod", "", 0, NULL, &out, &out_len, &res),
        PS_STATUS_UNIMPLEMENTED);
    assert_int_equal(res.grpc_code, 12);
    assert_non_null(strstr(res.details, "/pstest.Test/NoSuchMethod"));
    assert_int_equal(
        rpc_call_raw(f->channel, "/other.Service/Echo", "x", 1, NULL, &out, &out_len, &res),
        PS_STATUS_UNIMPLEMENTED);
}

static void test_malformed_payload(void **state) {
    fixture *f = *state;
    /* field 1 (string) claims 100 bytes but there are 2; then garbage tags */
    static const uint8_t bad1[] = {0x0a, 0x64, 'h', 'i'};
    static const uint8_t bad2[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const struct {
        const uint8_t *p;
        size_t n;
    } cases[] = {{bad1, sizeof bad1}, {bad2, sizeof bad2}};
    for (size_t i = 0; i < 2; i++) {
        void *out = NULL;
        size_t out_len = 0;
        rpc_result res;
        assert_int_equal(rpc_call_raw(f->channel, "/pstest.Test/Echo", cases[i].p, cases[i].n, NULL,
                                      &out, &out_len, &res),
                         PS_STATUS_INVALID_ARGUMENT);
        assert_non_null(strstr(res.details, "malformed"));
    }
    /* and the server still answers */
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "after";
    Pstest__EchoReply *reply = NULL;
    assert_int_equal(echo(f, &req, NULL, &reply, NULL), PS_STATUS_OK);
    assert_string_equal(reply->text, "after");
    protobuf_c_message_free_unpacked(&reply->base, NULL);
}

static void test_deadline_exceeded(void **state) {
    fixture *f = *state;
    Pstest__StatsReply *before = stats(f);
    Pstest__SleepRequest req = PSTEST__SLEEP_REQUEST__INIT;
    req.ms = 3000;
    rpc_call_opts opts = {.timeout_ms = 100};
    ProtobufCMessage *m = NULL;
    rpc_result res;
    int64_t t0 = now_ms();
    assert_int_equal(rpc_call(f->channel, "/pstest.Test/Sleep", &req.base,
                              &pstest__sleep_reply__descriptor, &opts, &m, &res),
                     PS_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(res.grpc_code, 4);
    assert_true(now_ms() - t0 < 2500);
    /* the handler noticed the call died */
    Pstest__StatsReply *after = NULL;
    for (int i = 0; i < 200; i++) {
        after = stats(f);
        if (after->sleeps_interrupted > before->sleeps_interrupted)
            break;
        protobuf_c_message_free_unpacked(&after->base, NULL);
        after = NULL;
        usleep(10000);
    }
    assert_non_null(after);
    protobuf_c_message_free_unpacked(&after->base, NULL);
    protobuf_c_message_free_unpacked(&before->base, NULL);
}

static void test_oversized_request(void **state) {
    (void)state;
    fixture *f = fixture_start(1024 * 1024, 0);
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    size_t n = 2 * 1024 * 1024;
    uint8_t *big = calloc(1, n);
    req.data.data = big;
    req.data.len = n;
    Pstest__EchoReply *reply = NULL;
    rpc_result res;
    assert_int_equal(echo(f, &req, NULL, &reply, &res), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(res.grpc_code, 8);
    free(big);
    /* a normal call still works */
    req.data.data = NULL;
    req.data.len = 0;
    req.text = "small";
    assert_int_equal(echo(f, &req, NULL, &reply, &res), PS_STATUS_OK);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    fixture_stop(f);
}

static void test_oversized_reply(void **state) {
    fixture *f = *state;
    rpc_channel *small = NULL;
    rpc_channel_opts copts = {.max_message_bytes = 512 * 1024};
    assert_int_equal(rpc_channel_create(f->target, &copts, &small), PS_STATUS_OK);
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.reply_bytes = 1024 * 1024;
    ProtobufCMessage *m = NULL;
    rpc_result res;
    assert_int_equal(rpc_call(small, "/pstest.Test/Echo", &req.base,
                              &pstest__echo_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_RESOURCE_EXHAUSTED);
    rpc_channel_destroy(small);
    /* within the default limit the same reply arrives whole */
    assert_int_equal(rpc_call(f->channel, "/pstest.Test/Echo", &req.base,
                              &pstest__echo_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_OK);
    assert_int_equal(((Pstest__EchoReply *)m)->data.len, 1024 * 1024);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_unreachable_peer(void **state) {
    (void)state;
    /* port 1 on loopback: nothing listens */
    rpc_channel *ch = NULL;
    assert_int_equal(rpc_channel_create("127.0.0.1:1", NULL, &ch), PS_STATUS_OK);
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 2000};
    assert_int_equal(rpc_call(ch, "/pstest.Test/Echo", &req.base, &pstest__echo_reply__descriptor,
                              &opts, &m, &res),
                     PS_STATUS_UNAVAILABLE);
    /* waiting for ready turns it into a deadline */
    rpc_call_opts wait = {.timeout_ms = 200, .wait_for_ready = true};
    assert_int_equal(rpc_call(ch, "/pstest.Test/Echo", &req.base, &pstest__echo_reply__descriptor,
                              &wait, &m, &res),
                     PS_STATUS_DEADLINE_EXCEEDED);
    rpc_channel_destroy(ch);
}

typedef struct load_arg {
    fixture *f;
    int calls;
    int ok;
} load_arg;

static void *load_thread(void *p) {
    load_arg *a = p;
    char text[32];
    for (int i = 0; i < a->calls; i++) {
        Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
        snprintf(text, sizeof text, "call-%d", i);
        req.text = text;
        Pstest__EchoReply *reply = NULL;
        if (echo(a->f, &req, NULL, &reply, NULL) == PS_STATUS_OK) {
            if (strcmp(reply->text, text) == 0)
                a->ok++;
            protobuf_c_message_free_unpacked(&reply->base, NULL);
        }
    }
    return NULL;
}

static void test_concurrent_calls(void **state) {
    fixture *f = *state;
    pthread_t t[4];
    load_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (load_arg){f, 200, 0};
        pthread_create(&t[i], NULL, load_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(args[i].ok, 200);
    }
}

/* ---------------------------------------------------------------- streaming --- */

static void test_stream_complete(void **state) {
    fixture *f = *state;
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.count = 25;
    rpc_stream *s = NULL;
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    for (uint32_t i = 0; i < 25; i++) {
        ProtobufCMessage *m = NULL;
        assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
        assert_non_null(m);
        assert_int_equal(((Pstest__CountReply *)m)->index, i);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
    assert_null(m); /* clean end */
    assert_int_equal(rpc_stream_result(s)->grpc_code, 0);
    /* reading past the end keeps answering the final status */
    assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
    assert_null(m);
    rpc_stream_destroy(s);
}

/* A channel's keepalive pings (rpc.h) go while a stream waits for a quiet server; the
 * server takes pings this often (RPC_MIN_KEEPALIVE_MS / 2): with gRPC's own server limit
 * (one ping per 5 minutes without data, two strikes) the third ping would end the
 * stream with UNAVAILABLE. */
static void test_keepalive_pings_keep_a_quiet_stream(void **state) {
    fixture *f = *state;
    rpc_channel *pinging = NULL;
    rpc_channel_opts copts = {.keepalive_ms = 1}; /* raised to RPC_MIN_KEEPALIVE_MS */
    assert_int_equal(rpc_channel_create(f->target, &copts, &pinging), PS_STATUS_OK);
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.count = 1;
    req.first_delay_ms = 4 * RPC_MIN_KEEPALIVE_MS + RPC_MIN_KEEPALIVE_MS / 2;
    rpc_stream *s = NULL;
    assert_int_equal(rpc_stream_open(pinging, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);
    assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
    assert_null(m);
    assert_int_equal(rpc_stream_result(s)->grpc_code, 0);
    rpc_stream_destroy(s);
    rpc_channel_destroy(pinging);
}

/* A channel to f's server through a new proxy (*ret_proxy), pinging every keepalive_ms
 * (rpc_channel_opts). */
static rpc_channel *proxied_channel(fixture *f, int keepalive_ms, test_proxy **ret_proxy) {
    int port = 0;
    *ret_proxy = test_proxy_create(f->port, &port);
    assert_non_null(*ret_proxy);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    rpc_channel *ch = NULL;
    rpc_channel_opts copts = {.keepalive_ms = keepalive_ms};
    assert_int_equal(rpc_channel_create(target, &copts, &ch), PS_STATUS_OK);
    return ch;
}

/* A client that stops answering (a frozen proxy between it and the server: like a
 * stopped process or a cut network) loses its stream to the server's keepalive pings:
 * the handler sees the call die within a few ping intervals, where it used to wait
 * until TCP gave up (never, while the peer's kernel still acknowledges). */
static void test_server_pings_drop_a_mute_client(void **state) {
    (void)state;
    fixture *f = fixture_start_opts((rpc_server_opts){.keepalive_ms = RPC_MIN_KEEPALIVE_MS});
    test_proxy *proxy = NULL;
    rpc_channel *quiet = proxied_channel(f, -1, &proxy); /* no pings: the server must find it */
    Pstest__StatsReply *before = stats(f);
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.count = 1;
    req.first_delay_ms = 60000; /* a stream quiet for a minute */
    rpc_stream *s = NULL;
    assert_int_equal(rpc_stream_open(quiet, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    Pstest__StatsReply *now = NULL;
    for (int i = 0; i < 500; i++) { /* the handler runs */
        now = stats(f);
        if (now->streams_started > before->streams_started)
            break;
        protobuf_c_message_free_unpacked(&now->base, NULL);
        now = NULL;
        usleep(10000);
    }
    assert_non_null(now);
    protobuf_c_message_free_unpacked(&now->base, NULL);
    test_proxy_freeze(proxy, true);
    int64_t t0 = now_ms();
    bool dropped = false;
    while (!dropped && now_ms() - t0 < 15000) {
        now = stats(f);
        dropped = now->streams_ended_dead > before->streams_ended_dead;
        protobuf_c_message_free_unpacked(&now->base, NULL);
        usleep(20000);
    }
    int64_t took = now_ms() - t0;
    assert_true(dropped);
    print_message("a mute client's stream dropped %lld ms after it went mute\n", (long long)took);
    test_proxy_freeze(proxy, false);
    rpc_stream_destroy(s);
    rpc_channel_destroy(quiet);
    test_proxy_destroy(proxy);
    protobuf_c_message_free_unpacked(&before->base, NULL);
    fixture_stop(f);
}

/* And the other way: a call to a server that stops answering fails UNAVAILABLE at the
 * client's keepalive (two intervals or so), not at its deadline a minute later. */
static void test_client_pings_fail_a_call_to_a_mute_server(void **state) {
    fixture *f = *state;
    test_proxy *proxy = NULL;
    rpc_channel *pinging = proxied_channel(f, RPC_MIN_KEEPALIVE_MS, &proxy);
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "connect";
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_call(pinging, "/pstest.Test/Echo", &req.base,
                              &pstest__echo_reply__descriptor, NULL, &m, NULL),
                     PS_STATUS_OK);
    protobuf_c_message_free_unpacked(m, NULL);
    test_proxy_freeze(proxy, true);
    rpc_call_opts opts = {.timeout_ms = 60000};
    rpc_result res;
    int64_t t0 = now_ms();
    m = NULL;
    ps_status st = rpc_call(pinging, "/pstest.Test/Echo", &req.base,
                            &pstest__echo_reply__descriptor, &opts, &m, &res);
    int64_t took = now_ms() - t0;
    print_message("a call to a mute server failed after %lld ms: %s\n", (long long)took,
                  res.details);
    assert_int_equal(st, PS_STATUS_UNAVAILABLE);
    assert_true(took < 15000);
    test_proxy_freeze(proxy, false);
    rpc_channel_destroy(pinging);
    test_proxy_destroy(proxy);
}

static void test_stream_cancel(void **state) {
    fixture *f = *state;
    Pstest__StatsReply *before = stats(f);
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.count = 0; /* forever */
    req.interval_ms = 10;
    rpc_stream *s = NULL;
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    for (int i = 0; i < 3; i++) {
        ProtobufCMessage *m = NULL;
        assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    rpc_stream_cancel(s);
    ProtobufCMessage *m = NULL;
    ps_status st;
    /* messages already in flight may still arrive; then the cancellation */
    while ((st = rpc_stream_next(s, &m)) == PS_STATUS_OK && m)
        protobuf_c_message_free_unpacked(m, NULL);
    assert_int_equal(st, PS_STATUS_CANCELLED);
    rpc_stream_destroy(s);
    /* the server-side handler saw the call die and ended */
    Pstest__StatsReply *after = NULL;
    for (int i = 0; i < 300; i++) {
        after = stats(f);
        if (after->streams_ended_dead > before->streams_ended_dead)
            break;
        protobuf_c_message_free_unpacked(&after->base, NULL);
        after = NULL;
        usleep(10000);
    }
    assert_non_null(after);
    protobuf_c_message_free_unpacked(&after->base, NULL);
    protobuf_c_message_free_unpacked(&before->base, NULL);
}

static void test_stream_deadline(void **state) {
    fixture *f = *state;
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.interval_ms = 20;
    rpc_stream *s = NULL;
    rpc_call_opts opts = {.timeout_ms = 150};
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, &opts, &s),
                     PS_STATUS_OK);
    ProtobufCMessage *m = NULL;
    ps_status st;
    int got = 0;
    while ((st = rpc_stream_next(s, &m)) == PS_STATUS_OK && m) {
        got++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_true(got >= 1);
    assert_int_equal(st, PS_STATUS_DEADLINE_EXCEEDED);
    rpc_stream_destroy(s);
}

typedef struct cancel_arg {
    rpc_stream *s;
    int after_ms;
} cancel_arg;

static void *cancel_thread(void *p) {
    cancel_arg *a = p;
    usleep((useconds_t)a->after_ms * 1000);
    rpc_stream_cancel(a->s);
    return NULL;
}

static void test_stream_quiet_server_cancellable(void **state) {
    fixture *f = *state;
    /* the server sends nothing for 10 s: opening must not wait for it, and a cancel
     * from another thread must end a reader blocked on the first message */
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.first_delay_ms = 10000;
    rpc_stream *s = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    assert_true(now_ms() - t0 < 1000);
    cancel_arg a = {s, 100};
    pthread_t t;
    pthread_create(&t, NULL, cancel_thread, &a);
    ProtobufCMessage sentinel, *m = &sentinel;
    assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_CANCELLED);
    assert_ptr_equal(m, &sentinel); /* an output is left alone on failure */
    assert_true(now_ms() - t0 < 3000);
    pthread_join(t, NULL);
    rpc_stream_destroy(s);

    /* opened and destroyed without reading: no hang, no leak */
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    rpc_stream_destroy(s);
    assert_true(now_ms() - t0 < 4000);
}

static rpc_stream *open_count(fixture *f) {
    Pstest__CountRequest req = PSTEST__COUNT_REQUEST__INIT;
    req.interval_ms = 10;
    rpc_stream *s = NULL;
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &req.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    return s;
}

static void test_stream_limit(void **state) {
    (void)state;
    fixture *f = fixture_start_streams(0, 0, 2);
    rpc_stream *live[2];
    ProtobufCMessage *m = NULL;
    for (int i = 0; i < 2; i++) {
        live[i] = open_count(f);
        assert_int_equal(rpc_stream_next(live[i], &m), PS_STATUS_OK);
        assert_non_null(m);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    /* a third is refused at once, with the limit in the message */
    rpc_stream *over = open_count(f);
    m = NULL;
    assert_int_equal(rpc_stream_next(over, &m), PS_STATUS_RESOURCE_EXHAUSTED);
    assert_null(m);
    assert_non_null(strstr(rpc_stream_result(over)->details, "2 streams open"));
    rpc_stream_destroy(over);
    /* unary calls still work while the streams hold every slot */
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "still here";
    Pstest__EchoReply *rep = NULL;
    assert_int_equal(echo(f, &req, NULL, &rep, NULL), PS_STATUS_OK);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* closing one frees its slot (the handler notices the cancel within its interval) */
    rpc_stream_destroy(live[0]);
    int64_t t0 = now_ms();
    ps_status st = PS_STATUS_RESOURCE_EXHAUSTED;
    while (st == PS_STATUS_RESOURCE_EXHAUSTED && now_ms() - t0 < 5000) {
        rpc_stream *again = open_count(f);
        m = NULL;
        st = rpc_stream_next(again, &m);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
        rpc_stream_destroy(again);
        if (st == PS_STATUS_RESOURCE_EXHAUSTED)
            usleep(20000);
    }
    assert_int_equal(st, PS_STATUS_OK);
    rpc_stream_destroy(live[1]);
    fixture_stop(f);
}

/* ---------------------------------------------------------------- shutdown --- */

typedef struct sleep_arg {
    fixture *f;
    uint32_t ms;
    ps_status st;
    bool interrupted;
} sleep_arg;

static void *sleep_thread(void *p) {
    sleep_arg *a = p;
    Pstest__SleepRequest req = PSTEST__SLEEP_REQUEST__INIT;
    req.ms = a->ms;
    ProtobufCMessage *m = NULL;
    a->st = rpc_call(a->f->channel, "/pstest.Test/Sleep", &req.base,
                     &pstest__sleep_reply__descriptor, NULL, &m, NULL);
    if (m) {
        a->interrupted = ((Pstest__SleepReply *)m)->interrupted;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return NULL;
}

static void test_shutdown_graceful_with_live_stream(void **state) {
    (void)state;
    fixture *f = fixture_start(0, 3000);
    /* a live stream that would never end by itself */
    Pstest__CountRequest creq = PSTEST__COUNT_REQUEST__INIT;
    creq.interval_ms = 10;
    rpc_stream *s = NULL;
    assert_int_equal(rpc_stream_open(f->channel, "/pstest.Test/Count", &creq.base,
                                     &pstest__count_reply__descriptor, NULL, &s),
                     PS_STATUS_OK);
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_stream_next(s, &m), PS_STATUS_OK);
    protobuf_c_message_free_unpacked(m, NULL);
    /* an in-flight unary call that needs 300 ms */
    sleep_arg a = {f, 300, PS_STATUS_INTERNAL, true};
    pthread_t t;
    pthread_create(&t, NULL, sleep_thread, &a);
    usleep(100000);
    int64_t t0 = now_ms();
    rpc_server_shutdown(f->server);
    int64_t took = now_ms() - t0;
    pthread_join(t, NULL);
    /* the unary call finished within the grace period, untouched */
    assert_int_equal(a.st, PS_STATUS_OK);
    assert_false(a.interrupted);
    /* the stream was ended by the server (not left hanging) */
    ps_status st;
    while ((st = rpc_stream_next(s, &m)) == PS_STATUS_OK && m)
        protobuf_c_message_free_unpacked(m, NULL);
    assert_int_not_equal(st, PS_STATUS_OK);
    assert_true(took < 2900); /* well inside the grace: nothing waited for the stream */
    rpc_stream_destroy(s);
    fixture_stop(f);
}

static void test_shutdown_cancels_after_grace(void **state) {
    (void)state;
    fixture *f = fixture_start(0, 200);
    sleep_arg a = {f, 20000, PS_STATUS_OK, false};
    pthread_t t;
    pthread_create(&t, NULL, sleep_thread, &a);
    usleep(100000);
    int64_t t0 = now_ms();
    rpc_server_shutdown(f->server);
    int64_t took = now_ms() - t0;
    pthread_join(t, NULL);
    assert_int_not_equal(a.st, PS_STATUS_OK); /* cancelled after the grace period */
    assert_true(took < 5000);
    fixture_stop(f);
}

static void test_server_bad_options(void **state) {
    (void)state;
    rpc_server *s = NULL;
    rpc_server_opts bad = {.listen = NULL};
    assert_int_equal(rpc_server_create(&bad, &s), PS_STATUS_INVALID_ARGUMENT);
    rpc_server_opts opts = {.listen = "256.1.2.3:99999"};
    assert_int_equal(rpc_server_create(&opts, &s), PS_STATUS_OK);
    rpc_method m = {"no-slash", RPC_METHOD_UNARY, &pstest__echo_request__descriptor, NULL, NULL, 0};
    assert_int_equal(rpc_server_add_method(s, &m), PS_STATUS_INVALID_ARGUMENT);
    assert_int_equal(testsvc_register(s), PS_STATUS_OK);
    assert_int_equal(testsvc_register(s), PS_STATUS_ALREADY_EXISTS);
    assert_int_equal(rpc_server_start(s, NULL), PS_STATUS_UNAVAILABLE);
    rpc_server_destroy(s);
    rpc_server_destroy(NULL);
    rpc_channel_destroy(NULL);
    rpc_stream_destroy(NULL);
}

/* Deferred answers (rpc_ctx_defer/rpc_ctx_complete): four calls answered 300 ms later
 * from other threads do not hold the server's two workers (a plain call meanwhile is
 * answered at once); each gets its own reply, read from a request the call kept; a
 * deferred failure carries its status and details; a client gone before its answer
 * harms nothing; a server shut down while a call waits for its answer waits for it. */
static void test_deferred_answers(void **state) {
    fixture *f = *state;
    enum { N = 4 };
    rpc_pending *p[N];
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.later_ms = 300;
    char texts[N][16];
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 5000};
    int64_t t0 = now_ms();
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "later %d", i);
        req.text = texts[i];
        assert_int_equal(
            rpc_call_start(f->channel, "/pstest.Test/Echo", &req.base, NULL, 0, &opts, &p[i], &res),
            PS_STATUS_OK);
    }
    Pstest__EchoRequest now = PSTEST__ECHO_REQUEST__INIT;
    now.text = "now";
    Pstest__EchoReply *reply = NULL;
    assert_int_equal(echo(f, &now, &opts, &reply, &res), PS_STATUS_OK);
    assert_true(now_ms() - t0 < 250); /* not behind the deferred ones */
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    for (int i = 0; i < N; i++) {
        ProtobufCMessage *m = NULL;
        assert_int_equal(
            rpc_pending_finish(p[i], &pstest__echo_reply__descriptor, 0, &m, NULL, &res),
            PS_STATUS_OK);
        assert_string_equal(((Pstest__EchoReply *)m)->text, texts[i]);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_true(now_ms() - t0 >= 300);
    req.text = "too late";
    req.fail_code = "UNAVAILABLE";
    assert_int_equal(echo(f, &req, &opts, &reply, &res), PS_STATUS_UNAVAILABLE);
    assert_string_equal(res.details, "too late");
    /* a client that gives up before the answer: it sees its deadline, the late answer
     * goes nowhere, and the server goes on */
    req.fail_code = "";
    req.text = "nobody waits";
    rpc_call_opts brief = {.timeout_ms = 50};
    assert_int_equal(echo(f, &req, &brief, &reply, &res), PS_STATUS_DEADLINE_EXCEEDED);
    usleep(400 * 1000); /* the answer comes meanwhile */
    assert_int_equal(echo(f, &now, &opts, &reply, &res), PS_STATUS_OK);
    protobuf_c_message_free_unpacked(&reply->base, NULL);
    /* shut down with one waiting: the server waits for its answer */
    req.fail_code = "";
    req.text = "at shutdown";
    rpc_pending *last = NULL;
    assert_int_equal(
        rpc_call_start(f->channel, "/pstest.Test/Echo", &req.base, NULL, 0, &opts, &last, &res),
        PS_STATUS_OK);
    usleep(50 * 1000); /* let it reach the handler */
    rpc_server_shutdown(f->server);
    ProtobufCMessage *m = NULL;
    ps_status st = rpc_pending_finish(last, &pstest__echo_reply__descriptor, 0, &m, NULL, &res);
    assert_int_equal(st, PS_STATUS_OK);
    protobuf_c_message_free_unpacked(m, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_unary_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_visible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_status_and_details, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bytes_fields_as_slices, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_fields_as_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_exceeded, setup, teardown),
        cmocka_unit_test(test_oversized_request),
        cmocka_unit_test_setup_teardown(test_oversized_reply, setup, teardown),
        cmocka_unit_test(test_unreachable_peer),
        cmocka_unit_test_setup_teardown(test_concurrent_calls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_complete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_pings_keep_a_quiet_stream, setup, teardown),
        cmocka_unit_test(test_server_pings_drop_a_mute_client),
        cmocka_unit_test_setup_teardown(test_client_pings_fail_a_call_to_a_mute_server, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stream_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_quiet_server_cancellable, setup, teardown),
        cmocka_unit_test(test_stream_limit),
        cmocka_unit_test(test_shutdown_graceful_with_live_stream),
        cmocka_unit_test(test_shutdown_cancels_after_grace),
        cmocka_unit_test(test_server_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
