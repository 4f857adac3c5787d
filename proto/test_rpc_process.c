/* test_rpc_process.c: the rpc layer against a server in another process
 * (proto/rpc_test_server, path in argv[1]), for what one process cannot show: there
 * the client's own polling also reads the server's connections. A server with one
 * worker busy in a long handler still answers a client's keepalive pings (its side
 * worker polls), so the call succeeds instead of failing UNAVAILABLE after two ping
 * intervals. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rpc.h"
#include "testsvc.pb-c.h"

static const char *server_bin;

typedef struct child {
    pid_t pid; /* 0 when none runs */
    char target[64];
} child;

static child server; /* teardown stops it even when a test failed half way */

/* Starts the test server with one worker; its "PORT n" line gives the target. */
static void child_start(child *c) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(server_bin, server_bin, "--threads", "1", "--spin-us", "-1", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    assert_non_null(out);
    int port = 0;
    assert_int_equal(fscanf(out, "PORT %d", &port), 1);
    fclose(out);
    snprintf(c->target, sizeof c->target, "127.0.0.1:%d", port);
}

/* SIGTERM and wait; -1 unless it exited 0. */
static int child_stop(child *c) {
    int st = 0;
    if (c->pid <= 0)
        return 0;
    kill(c->pid, SIGTERM);
    pid_t got = waitpid(c->pid, &st, 0);
    c->pid = 0;
    return got > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return child_stop(&server);
}

static void test_busy_server_answers_pings(void **state) {
    (void)state;
    child_start(&server);
    rpc_channel *ch = NULL;
    rpc_channel_opts copts = {.keepalive_ms = RPC_MIN_KEEPALIVE_MS};
    assert_int_equal(rpc_channel_create(server.target, &copts, &ch), PS_STATUS_OK);
    Pstest__SleepRequest req = PSTEST__SLEEP_REQUEST__INIT;
    req.ms = 5 * RPC_MIN_KEEPALIVE_MS; /* its only worker, in the handler for 5 intervals */
    rpc_call_opts opts = {.timeout_ms = 60000, .wait_for_ready = true};
    ProtobufCMessage *m = NULL;
    rpc_result res;
    ps_status st = rpc_call(ch, "/pstest.Test/Sleep", &req.base, &pstest__sleep_reply__descriptor,
                            &opts, &m, &res);
    if (st != PS_STATUS_OK)
        print_message("the call failed: %s\n", res.details);
    assert_int_equal(st, PS_STATUS_OK);
    assert_false(((Pstest__SleepReply *)m)->interrupted);
    protobuf_c_message_free_unpacked(m, NULL);
    rpc_channel_destroy(ch);
    assert_int_equal(child_stop(&server), 0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_rpc_process RPC_TEST_SERVER\n");
        return 2;
    }
    server_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_busy_server_answers_pings, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
