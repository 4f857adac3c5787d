/* test_subscriber.c: what each message of a shard's update stream means (cmocka, no
 * process). The old subscriber (serving/serve/serve.c) noticed a shard restart only
 * when the shard's sequence number went down (which, with wall-clock sequence numbers,
 * it never does) and knew nothing of incarnations or keepalives: these tests pin down
 * the restart detection (test_new_incarnation_*) and that keepalives move the resume
 * point without applying anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "subscriber.h"

static Ps__Update msg(uint64_t seq, uint64_t incarnation) {
    Ps__Update u = PS__UPDATE__INIT;
    u.seq = seq;
    u.incarnation = incarnation;
    u.version = seq;
    return u;
}

static void test_base_sets_start(void **state) {
    (void)state;
    subscriber_state st = {0};
    subscriber_verdict v = subscriber_state_base(&st, 1000, 77);
    assert_true(v.repull); /* whatever was held from this shard before may be behind */
    assert_string_equal(v.why, "subscribed");
    assert_true(st.have_base);
    assert_int_equal(st.seq, 1000);
    assert_int_equal(st.incarnation, 77);
    /* reconnecting to the same incarnation keeps the resume point */
    st.seq = 1200;
    v = subscriber_state_base(&st, 1500, 77);
    assert_false(v.repull);
    assert_int_equal(st.seq, 1200);
}

static void test_new_incarnation_in_health(void **state) {
    (void)state;
    subscriber_state st = {0};
    subscriber_state_base(&st, 1000, 77);
    st.seq = 1200;
    subscriber_verdict v = subscriber_state_base(&st, 9000, 78);
    assert_true(v.repull);
    assert_string_equal(v.why, "restarted");
    assert_int_equal(st.seq, 9000);
    assert_int_equal(st.incarnation, 78);
}

static void test_new_incarnation_on_stream(void **state) {
    (void)state;
    subscriber_state st = {0};
    subscriber_state_base(&st, 10, 5);
    Ps__Update u = msg(11, 5);
    subscriber_verdict v = subscriber_state_message(&st, &u);
    assert_true(v.apply);
    assert_false(v.repull);
    assert_int_equal(st.seq, 11);
    u = msg(500, 6); /* an update from a new incarnation: apply and re-pull */
    v = subscriber_state_message(&st, &u);
    assert_true(v.apply);
    assert_true(v.repull);
    assert_int_equal(st.incarnation, 6);
    assert_int_equal(st.seq, 500);
}

static void test_resync_and_keepalive(void **state) {
    (void)state;
    subscriber_state st = {0};
    subscriber_state_base(&st, 10, 5);
    Ps__Update u = msg(40, 5);
    u.keepalive = true;
    subscriber_verdict v = subscriber_state_message(&st, &u);
    assert_false(v.apply);
    assert_false(v.repull);
    assert_int_equal(st.seq, 40);
    u = msg(90, 5);
    u.resync = true;
    v = subscriber_state_message(&st, &u);
    assert_false(v.apply);
    assert_true(v.repull);
    assert_string_equal(v.why, "resync");
    assert_int_equal(st.seq, 90);
}

static void test_shard_without_incarnation(void **state) {
    (void)state;
    subscriber_state st = {0};
    subscriber_state_base(&st, 10, 0);
    Ps__Update u = msg(11, 0);
    subscriber_verdict v = subscriber_state_message(&st, &u);
    assert_true(v.apply);
    assert_false(v.repull);
    v = subscriber_state_base(&st, 3, 0);
    assert_false(v.repull);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_sets_start),
        cmocka_unit_test(test_new_incarnation_in_health),
        cmocka_unit_test(test_new_incarnation_on_stream),
        cmocka_unit_test(test_resync_and_keepalive),
        cmocka_unit_test(test_shard_without_incarnation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
