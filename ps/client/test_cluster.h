/* test_cluster.h: what the client library's integration tests share: starting a
 * coordinator and shards of the build (PS_BUILD_DIR) as child processes on free loopback
 * ports, in a temporary directory, and stopping them (each must exit 0). Included by
 * one test program each (static functions and state). */
#ifndef PS_CLIENT_TEST_CLUSTER_H
#define PS_CLIENT_TEST_CLUSTER_H

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define MAX_PROCS 8

static char build_dir[1024], tmp_dir[256];
static pid_t procs[MAX_PROCS];
static int n_procs;
static char coordinator[64];

/* Starts a program of the build with a --port-file in tmp_dir; returns its port. */
static int start(const char *name, const char *const *argv) {
    char port_file[512], log_file[512];
    snprintf(port_file, sizeof port_file, "%s/%s.port", tmp_dir, name);
    snprintf(log_file, sizeof log_file, "%s/%s.log", tmp_dir, name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const char *args[32];
        int n = 0;
        for (; argv[n]; n++)
            args[n] = argv[n];
        args[n++] = "--port-file";
        args[n++] = port_file;
        args[n] = NULL;
        FILE *log = freopen(log_file, "w", stderr);
        (void)log;
        execv(args[0], (char *const *)args);
        _exit(127);
    }
    procs[n_procs++] = pid;
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(port_file, "r");
        int port = 0;
        bool ok = f && fscanf(f, "%d", &port) == 1 && port > 0;
        if (f)
            fclose(f);
        if (ok)
            return port;
        usleep(10000);
    }
    fail_msg("%s did not start (see %s)", name, log_file);
    return 0;
}

static void start_shard(const char *id) {
    char bin[1100];
    snprintf(bin, sizeof bin, "%s/ps/ps-shard", build_dir);
    const char *argv[] = {bin, "--id", id, "--coordinator", coordinator, NULL};
    start(id, argv);
}

/* Starts a coordinator (heartbeats every 200 ms; extra flags may follow, NULL-ended)
 * and `shards` shards named shard-1.. in a fresh temporary directory. */
static int cluster_start(const char *tmp_prefix, int shards, ...) {
    const char *b = getenv("PS_BUILD_DIR");
    snprintf(build_dir, sizeof build_dir, "%s", b ? b : "build");
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/%s.XXXXXX", tmp_prefix);
    if (!mkdtemp(tmp_dir))
        return -1;
    char bin[1100], state_dir[512];
    snprintf(bin, sizeof bin, "%s/ps/ps-coordinator", build_dir);
    snprintf(state_dir, sizeof state_dir, "%s/coord", tmp_dir);
    const char *argv[24] = {bin,       "--listen",       "127.0.0.1:0", "--state-dir",
                            state_dir, "--heartbeat-ms", "200"};
    int n = 7;
    va_list ap;
    va_start(ap, shards);
    for (const char *f; n < 23 && (f = va_arg(ap, const char *));)
        argv[n++] = f;
    va_end(ap);
    argv[n] = NULL;
    snprintf(coordinator, sizeof coordinator, "127.0.0.1:%d", start("coordinator", argv));
    for (int i = 1; i <= shards; i++) {
        char id[32];
        snprintf(id, sizeof id, "shard-%d", i);
        start_shard(id);
    }
    return 0;
}

/* SIGKILL to process i (0: the coordinator, then shard-1..), waited for; cluster_stop
 * then leaves it out. */
static inline void cluster_kill(int i) {
    assert_true(i < n_procs && procs[i] > 0);
    kill(procs[i], SIGKILL);
    waitpid(procs[i], NULL, 0);
    procs[i] = 0;
}

/* SIGTERM to every process; -1 when one did not exit 0. Removes the directory. */
static int cluster_stop(void) {
    int bad = 0;
    for (int i = n_procs - 1; i >= 0; i--)
        if (procs[i] > 0)
            kill(procs[i], SIGTERM);
    for (int i = 0; i < n_procs; i++) {
        if (procs[i] <= 0)
            continue;
        int st = 0;
        waitpid(procs[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "process %d did not exit cleanly (status %d)\n", (int)procs[i], st);
            bad = 1;
        }
    }
    n_procs = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0)
        bad = 1;
    return bad ? -1 : 0;
}

#endif
