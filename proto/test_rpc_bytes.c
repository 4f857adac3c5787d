/* test_rpc_bytes.c: the rpc layer's hot-path pieces against the test service, server
 * and client in one process over loopback: calls started and finished apart (several
 * in flight, collected in any order), byte fields sent in parts without copies (and
 * memory lent that way given back, rpc_loan), and large raw fields received as the
 * pieces gRPC delivered, read without flattening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rpc.h"
#include "testsvc.pb-c.h"
#include "testsvc_impl.h"

typedef struct fixture {
    rpc_server *server;
    rpc_channel *channel;
} fixture;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    rpc_server_opts opts = {.listen = "127.0.0.1:0", .threads = 2};
    int port = 0;
    assert_int_equal(rpc_server_create(&opts, &f->server), PS_STATUS_OK);
    assert_int_equal(testsvc_register(f->server), PS_STATUS_OK);
    assert_int_equal(rpc_server_start(f->server, &port), PS_STATUS_OK);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", port);
    assert_int_equal(rpc_channel_create(target, NULL, &f->channel), PS_STATUS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    rpc_channel_destroy(f->channel);
    rpc_server_destroy(f->server);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------- async --- */

static void test_calls_in_flight_finish_in_any_order(void **state) {
    fixture *f = *state;
    /* a slow call, then quick ones: starting returns at once, and the quick ones can
     * be collected while the slow one is still running */
    Pstest__SleepRequest sleep = PSTEST__SLEEP_REQUEST__INIT;
    sleep.ms = 300;
    rpc_pending *slow = NULL, *quick[4] = {0};
    rpc_result res;
    int64_t t0 = now_ms();
    assert_int_equal(
        rpc_call_start(f->channel, "/pstest.Test/Sleep", &sleep.base, NULL, 0, NULL, &slow, &res),
        PS_STATUS_OK);
    char texts[4][8];
    for (int i = 0; i < 4; i++) {
        Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
        snprintf(texts[i], sizeof texts[i], "e%d", i);
        req.text = texts[i];
        assert_int_equal(rpc_call_start(f->channel, "/pstest.Test/Echo", &req.base, NULL, 0, NULL,
                                        &quick[i], &res),
                         PS_STATUS_OK);
    }
    assert_true(now_ms() - t0 < 250); /* nothing above waited for the slow call */
    for (int i = 3; i >= 0; i--) {    /* in reverse order of starting */
        ProtobufCMessage *m = NULL;
        assert_int_equal(
            rpc_pending_finish(quick[i], &pstest__echo_reply__descriptor, 0, &m, NULL, &res),
            PS_STATUS_OK);
        assert_string_equal(((Pstest__EchoReply *)m)->text, texts[i]);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_pending_finish(slow, &pstest__sleep_reply__descriptor, 0, &m, NULL, &res),
                     PS_STATUS_OK);
    assert_false(((Pstest__SleepReply *)m)->interrupted);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_started_call_reports_failure_when_finished(void **state) {
    fixture *f = *state;
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "no such thing";
    req.fail_code = "NOT_FOUND";
    rpc_pending *p = NULL;
    rpc_result res;
    assert_int_equal(
        rpc_call_start(f->channel, "/pstest.Test/Echo", &req.base, NULL, 0, NULL, &p, &res),
        PS_STATUS_OK);
    ProtobufCMessage *m = (ProtobufCMessage *)&req; /* must stay untouched */
    assert_int_equal(rpc_pending_finish(p, &pstest__echo_reply__descriptor, 0, &m, NULL, &res),
                     PS_STATUS_NOT_FOUND);
    assert_ptr_equal(m, &req);
    assert_int_equal(res.grpc_code, 5);
    assert_string_equal(res.details, "no such thing");
}

/* ---------------------------------------------------------------- parts --- */

static atomic_int released;

static void count_release(void *arg) {
    (void)arg;
    atomic_fetch_add(&released, 1);
}

static void test_field_sent_in_parts(void **state) {
    fixture *f = *state;
    atomic_store(&released, 0);
    static const char a[] = "alpha", b[] = "", c[] = "gamma!";
    rpc_bytes_part parts[3] = {{a, 5, count_release, NULL},
                               {b, 0, count_release, NULL}, /* empty: released at once */
                               {c, 6, count_release, NULL}};
    rpc_bytes_field field = {.field_number = 2, .parts = parts, .n_parts = 3};
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "parts";
    ProtobufCMessage *m = NULL;
    rpc_result res;
    assert_int_equal(rpc_call_with_bytes(f->channel, "/pstest.Test/Echo", &req.base, &field, 1,
                                         &pstest__echo_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_OK);
    Pstest__EchoReply *reply = (Pstest__EchoReply *)m;
    assert_int_equal(reply->data.len, 11);
    assert_memory_equal(reply->data.data, "alphagamma!", 11);
    protobuf_c_message_free_unpacked(m, NULL);
    /* every part is released exactly once, soon after gRPC is done with it */
    for (int i = 0; i < 500 && atomic_load(&released) < 3; i++)
        usleep(2000);
    assert_int_equal(atomic_load(&released), 3);
}

/* ---------------------------------------------------------------- pieces --- */

static void test_large_raw_field_read_as_pieces(void **state) {
    fixture *f = *state;
    Pstest__EchoRequest big = PSTEST__ECHO_REQUEST__INIT;
    big.text = "big";
    big.reply_bytes = 3 * 1024 * 1024 + 5;
    ProtobufCMessage *m = NULL;
    rpc_received *received = NULL;
    rpc_result res;
    assert_int_equal(rpc_call_split(f->channel, "/pstest.Test/Echo", &big.base, NULL, 0,
                                    &pstest__echo_reply__descriptor, 2, NULL, &m, &received, &res),
                     PS_STATUS_OK);
    assert_string_equal(((Pstest__EchoReply *)m)->text, "big");
    const rpc_bytes_pieces *fields = NULL;
    assert_int_equal(rpc_received_pieces(received, &fields), 1);
    assert_int_equal(fields[0].len, big.reply_bytes);
    size_t sum = 0;
    for (size_t i = 0; i < fields[0].n_pieces; i++)
        sum += fields[0].pieces[i].len;
    assert_int_equal(sum, big.reply_bytes);
    /* a cursor reads it all, in uneven steps across the pieces */
    ps_bytes_cursor rd = rpc_bytes_cursor(&fields[0]);
    uint8_t buf[7777];
    size_t got = 0;
    while (got < big.reply_bytes) {
        size_t want = big.reply_bytes - got < sizeof buf ? big.reply_bytes - got : sizeof buf;
        assert_true(ps_bytes_take(&rd, buf, want));
        for (size_t k = 0; k < want; k++)
            assert_int_equal(buf[k], 0xab);
        got += want;
    }
    assert_false(ps_bytes_take(&rd, buf, 1)); /* nothing left */
    /* a range in the middle, and one past the end */
    assert_true(rpc_bytes_copy(&fields[0], 100000, buf, sizeof buf));
    assert_int_equal(buf[sizeof buf - 1], 0xab);
    assert_false(rpc_bytes_copy(&fields[0], big.reply_bytes - 1, buf, 2));
    /* and the contiguous view of the same field */
    const rpc_bytes_view *views = NULL;
    assert_int_equal(rpc_received_views(received, &views), 1);
    assert_int_equal(views[0].len, big.reply_bytes);
    assert_int_equal(views[0].data[views[0].len - 1], 0xab);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_received_free(received);
}

static void test_large_request_in_parts_reaches_handler_whole(void **state) {
    fixture *f = *state;
    /* a 2 MiB field sent in uneven parts to a handler that reads it as a contiguous
     * view: gRPC delivers it in pieces, the layer makes it whole on demand */
    size_t n = 2 * 1024 * 1024 + 3;
    uint8_t *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7u + 1);
    rpc_bytes_part parts[3] = {{data, 1000, NULL, NULL},
                               {data + 1000, n / 2, NULL, NULL},
                               {data + 1000 + n / 2, n - 1000 - n / 2, NULL, NULL}};
    rpc_bytes_field field = {.field_number = 2, .parts = parts, .n_parts = 3};
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    req.text = "raw";
    ProtobufCMessage *m = NULL;
    rpc_result res;
    assert_int_equal(rpc_call_with_bytes(f->channel, "/pstest.Test/EchoRaw", &req.base, &field, 1,
                                         &pstest__echo_reply__descriptor, NULL, &m, &res),
                     PS_STATUS_OK);
    Pstest__EchoReply *reply = (Pstest__EchoReply *)m;
    assert_string_equal(reply->text, "1");
    assert_int_equal(reply->data.len, n);
    assert_memory_equal(reply->data.data, data, n);
    protobuf_c_message_free_unpacked(m, NULL);
    free(data);
}

/* Memory lent through an rpc_loan: once the call is finished the wait returns, every
 * part given back (the memory may then be freed: ASan checks nobody reads it after),
 * also for a call that fails, and for an empty part. */
static void test_loan_gives_every_part_back(void **state) {
    fixture *f = *state;
    rpc_loan *loan = NULL;
    assert_int_equal(rpc_loan_create(&loan), PS_STATUS_OK);
    for (int round = 0; round < 20; round++) {
        size_t n = 1024 * 1024 + (size_t)round;
        uint8_t *data = malloc(n);
        assert_non_null(data);
        memset(data, round, n);
        rpc_bytes_part parts[3] = {rpc_loan_part(loan, data, n / 3),
                                   rpc_loan_part(loan, data + n / 3, 0),
                                   rpc_loan_part(loan, data + n / 3, n - n / 3)};
        rpc_bytes_field field = {.field_number = 2, .parts = parts, .n_parts = 3};
        Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
        req.text = "raw";
        ProtobufCMessage *m = NULL;
        rpc_result res;
        assert_int_equal(rpc_call_with_bytes(f->channel, "/pstest.Test/EchoRaw", &req.base, &field,
                                             1, &pstest__echo_reply__descriptor, NULL, &m, &res),
                         PS_STATUS_OK);
        assert_int_equal(((Pstest__EchoReply *)m)->data.len, n);
        protobuf_c_message_free_unpacked(m, NULL);
        rpc_loan_wait(loan);
        free(data);
    }
    /* a call nobody answers: its parts come back when it fails */
    rpc_channel *nowhere = NULL;
    assert_int_equal(rpc_channel_create("127.0.0.1:1", NULL, &nowhere), PS_STATUS_OK);
    uint8_t *data = malloc(4096);
    assert_non_null(data);
    rpc_bytes_part part = rpc_loan_part(loan, data, 4096);
    rpc_bytes_field field = {.field_number = 2, .parts = &part, .n_parts = 1};
    Pstest__EchoRequest req = PSTEST__ECHO_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    rpc_result res;
    rpc_call_opts opts = {.timeout_ms = 300};
    assert_int_not_equal(rpc_call_with_bytes(nowhere, "/pstest.Test/EchoRaw", &req.base, &field, 1,
                                             &pstest__echo_reply__descriptor, &opts, &m, &res),
                         PS_STATUS_OK);
    rpc_loan_wait(loan);
    free(data);
    rpc_channel_destroy(nowhere);
    rpc_loan_destroy(loan);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_calls_in_flight_finish_in_any_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_started_call_reports_failure_when_finished, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_field_sent_in_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_raw_field_read_as_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loan_gives_every_part_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_request_in_parts_reaches_handler_whole, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
