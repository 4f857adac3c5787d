/* bench_ps_cluster.c: see bench_ps_cluster.h. fork/exec of the build's programs with
 * --port-file, polling the port files and then the ring with a deadline. */
#define _XOPEN_SOURCE 700
#include "bench_ps_cluster.h"

#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "psclient.h"
#include "util.h"

#define POLL_US 10000

struct bench_cluster {
    char dir[256];        /* the temporary directory */
    char coordinator[64]; /* 127.0.0.1:PORT */
    pid_t coord_pid;      /* 0 when not started */
    pid_t shard_pids[BENCH_CLUSTER_MAX_SHARDS];
    int n_shards; /* started */
};

/* Starts argv[0] with its stderr into DIR/NAME.log and --port-file DIR/NAME.port. */
static ps_status spawn(bench_cluster *c, const char *name, const char *const *argv, pid_t *ret_pid,
                       char *err, size_t err_len) {
    char port_file[512], log_file[512];
    snprintf(port_file, sizeof port_file, "%s/%s.port", c->dir, name);
    snprintf(log_file, sizeof log_file, "%s/%s.log", c->dir, name);
    const char *args[24];
    size_t n = 0;
    for (; argv[n] && n < 20; n++)
        args[n] = argv[n];
    args[n++] = "--port-file";
    args[n++] = port_file;
    args[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        ps_set_err(err, err_len, "cannot fork to start %s", name);
        return PS_STATUS_INTERNAL;
    }
    if (pid == 0) {
        if (!freopen(log_file, "w", stderr))
            _exit(126);
        execv(args[0], (char *const *)args);
        _exit(127);
    }
    *ret_pid = pid;
    return PS_STATUS_OK;
}

/* Waits for DIR/NAME.port to hold a port. */
static ps_status wait_port(const bench_cluster *c, const char *name, int *ret_port, char *err,
                           size_t err_len) {
    char port_file[512];
    snprintf(port_file, sizeof port_file, "%s/%s.port", c->dir, name);
    int64_t until = ps_now_us() + (int64_t)BENCH_CLUSTER_START_MS * 1000;
    while (ps_now_us() < until) {
        FILE *f = fopen(port_file, "r");
        int port = 0;
        bool ok = f && fscanf(f, "%d", &port) == 1 && port > 0;
        if (f)
            fclose(f);
        if (ok) {
            *ret_port = port;
            return PS_STATUS_OK;
        }
        usleep(POLL_US);
    }
    ps_set_err(err, err_len, "%s did not start within %d ms (see %s/%s.log)", name,
               BENCH_CLUSTER_START_MS, c->dir, name);
    return PS_STATUS_UNAVAILABLE;
}

/* Waits until the coordinator's ring holds every shard. */
static ps_status wait_ring(const bench_cluster *c, int shards, char *err, size_t err_len) {
    ps_client *pc = NULL;
    ps_status st = ps_client_create(c->coordinator, &pc, err, err_len);
    int64_t until = ps_now_us() + (int64_t)BENCH_CLUSTER_START_MS * 1000;
    while (st == PS_STATUS_OK && ps_client_shard_count(pc) < (uint32_t)shards) {
        if (ps_now_us() > until) {
            ps_set_err(err, err_len, "the ring holds %u of %d shards after %d ms (logs in %s)",
                       ps_client_shard_count(pc), shards, BENCH_CLUSTER_START_MS, c->dir);
            st = PS_STATUS_UNAVAILABLE;
            break;
        }
        usleep(POLL_US);
        st = ps_client_refresh(pc);
    }
    ps_client_destroy(pc);
    return st;
}

ps_status bench_cluster_create(const bench_cluster_opts *opts, bench_cluster **ret_cluster,
                               char *err, size_t err_len) {
    if (!opts || !opts->build_dir || opts->shards < 1 || opts->shards > BENCH_CLUSTER_MAX_SHARDS) {
        ps_set_err(err, err_len, "a cluster has 1..%d shards", BENCH_CLUSTER_MAX_SHARDS);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    bench_cluster *c = calloc(1, sizeof *c);
    if (!c) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    snprintf(c->dir, sizeof c->dir, "/tmp/bench_ps.XXXXXX");
    if (!mkdtemp(c->dir)) {
        free(c);
        ps_set_err(err, err_len, "cannot make a temporary directory");
        return PS_STATUS_IO;
    }
    char coord_bin[600], shard_bin[600], state_dir[300], log_mb[16];
    snprintf(coord_bin, sizeof coord_bin, "%s/ps/ps-coordinator", opts->build_dir);
    snprintf(shard_bin, sizeof shard_bin, "%s/ps/ps-shard", opts->build_dir);
    snprintf(state_dir, sizeof state_dir, "%s/coord", c->dir);
    snprintf(log_mb, sizeof log_mb, "%d", opts->log_mb);
    const char *cargv[] = {coord_bin, "--listen", "127.0.0.1:0", "--state-dir", state_dir, NULL};
    int port = 0;
    ps_status st = spawn(c, "coordinator", cargv, &c->coord_pid, err, err_len);
    if (st == PS_STATUS_OK)
        st = wait_port(c, "coordinator", &port, err, err_len);
    snprintf(c->coordinator, sizeof c->coordinator, "127.0.0.1:%d", port);
    for (int i = 0; st == PS_STATUS_OK && i < opts->shards; i++) {
        char id[32];
        snprintf(id, sizeof id, "shard-%d", i + 1);
        const char *sargv[] = {shard_bin,
                               "--id",
                               id,
                               "--coordinator",
                               c->coordinator,
                               opts->log_mb > 0 ? "--log-mb" : NULL,
                               log_mb,
                               NULL};
        st = spawn(c, id, sargv, &c->shard_pids[i], err, err_len);
        if (st == PS_STATUS_OK)
            c->n_shards++;
        int shard_port = 0;
        if (st == PS_STATUS_OK)
            st = wait_port(c, id, &shard_port, err, err_len);
    }
    if (st == PS_STATUS_OK)
        st = wait_ring(c, opts->shards, err, err_len);
    if (st != PS_STATUS_OK) {
        bench_cluster_destroy(c);
        return st;
    }
    *ret_cluster = c;
    return PS_STATUS_OK;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void stop(pid_t pid) {
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
}

void bench_cluster_destroy(bench_cluster *c) {
    if (!c)
        return;
    for (int i = c->n_shards - 1; i >= 0; i--)
        stop(c->shard_pids[i]);
    stop(c->coord_pid);
    nftw(c->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
}

const char *bench_cluster_coordinator(const bench_cluster *c) {
    return c->coordinator;
}

uint64_t bench_cluster_shard_rss(const bench_cluster *c, int i) {
    if (i < 0 || i >= c->n_shards)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->shard_pids[i]);
    FILE *f = fopen(path, "r");
    uint64_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", (unsigned long long *)&kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}
