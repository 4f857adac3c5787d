/* bench_ps_cluster.c: see bench_ps_cluster.h. fork/exec of the build's programs with
 * --port-file, polling the port files and then the ring with a deadline. */
#define _XOPEN_SOURCE 700
#include "bench_ps_cluster.h"

#include <ftw.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "psclient.h"
#include "util.h"

#define POLL_US 10000
#define MAX_ARGS 24            /* argv entries of one process, NULL included */
#define HEALTH_TIMEOUT_MS 5000 /* a shard's Health call */

/* One shard process. */
typedef struct bench_shard {
    char id[32];   /* shard-N */
    char addr[64]; /* 127.0.0.1:PORT once it serves */
    pid_t pid;     /* 0 once stopped or killed (and reaped) */
} bench_shard;

struct bench_cluster {
    char dir[256];        /* the temporary directory */
    char build_dir[512];  /* where the programs are */
    char coordinator[64]; /* 127.0.0.1:PORT */
    pid_t coord_pid;      /* 0 when not started */
    bench_shard shards[BENCH_CLUSTER_MAX_SHARDS];
    int n_shards;   /* started */
    int log_mb;     /* the shards' --log-mb; 0 = their default */
    bool data_dir;  /* the shards keep DIR/<id>.data */
    char fsync[16]; /* their --fsync; "" = their default */
};

/* Starts argv[0] with its stderr into DIR/NAME.log and --port-file DIR/NAME.port. */
static ps_status spawn(bench_cluster *c, const char *name, const char *const *argv, pid_t *ret_pid,
                       char *err, size_t err_len) {
    char port_file[512], log_file[512];
    snprintf(port_file, sizeof port_file, "%s/%s.port", c->dir, name);
    snprintf(log_file, sizeof log_file, "%s/%s.log", c->dir, name);
    const char *args[MAX_ARGS];
    size_t n = 0;
    for (; argv[n] && n < MAX_ARGS - 3; n++)
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

/* Starts the coordinator with the options' flags and waits for its port. */
static ps_status start_coordinator(bench_cluster *c, const bench_cluster_opts *opts, char *err,
                                   size_t err_len) {
    char bin[600], state_dir[300], replication[16], heartbeat[16];
    snprintf(bin, sizeof bin, "%s/ps/ps-coordinator", c->build_dir);
    snprintf(state_dir, sizeof state_dir, "%s/coord", c->dir);
    snprintf(replication, sizeof replication, "%d", opts->replication);
    snprintf(heartbeat, sizeof heartbeat, "%d", opts->heartbeat_ms);
    const char *argv[MAX_ARGS] = {bin, "--listen", "127.0.0.1:0", "--state-dir", state_dir};
    size_t n = 5;
    if (opts->replication > 0) {
        argv[n++] = "--replication";
        argv[n++] = replication;
    }
    if (opts->heartbeat_ms > 0) {
        argv[n++] = "--heartbeat-ms";
        argv[n++] = heartbeat;
    }
    int port = 0;
    ps_status st = spawn(c, "coordinator", argv, &c->coord_pid, err, err_len);
    if (st == PS_STATUS_OK)
        st = wait_port(c, "coordinator", &port, err, err_len);
    snprintf(c->coordinator, sizeof c->coordinator, "127.0.0.1:%d", port);
    return st;
}

ps_status bench_cluster_shard_start(bench_cluster *c, int *ret_index, char *err, size_t err_len) {
    if (c->n_shards == BENCH_CLUSTER_MAX_SHARDS) {
        ps_set_err(err, err_len, "a cluster has at most %d shards", BENCH_CLUSTER_MAX_SHARDS);
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    bench_shard *s = &c->shards[c->n_shards];
    snprintf(s->id, sizeof s->id, "shard-%d", c->n_shards + 1);
    char bin[600], log_mb[16], data_dir[300];
    snprintf(bin, sizeof bin, "%s/ps/ps-shard", c->build_dir);
    snprintf(log_mb, sizeof log_mb, "%d", c->log_mb);
    snprintf(data_dir, sizeof data_dir, "%s/%s.data", c->dir, s->id);
    const char *argv[MAX_ARGS] = {bin, "--id", s->id, "--coordinator", c->coordinator};
    size_t n = 5;
    if (c->log_mb > 0) {
        argv[n++] = "--log-mb";
        argv[n++] = log_mb;
    }
    if (c->data_dir) {
        argv[n++] = "--data-dir";
        argv[n++] = data_dir;
    }
    if (c->data_dir && c->fsync[0]) {
        argv[n++] = "--fsync";
        argv[n++] = c->fsync;
    }
    ps_status st = spawn(c, s->id, argv, &s->pid, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    c->n_shards++; /* stopped by bench_cluster_destroy from now on */
    int port = 0;
    if ((st = wait_port(c, s->id, &port, err, err_len)) != PS_STATUS_OK)
        return st;
    snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", port);
    *ret_index = c->n_shards - 1;
    return PS_STATUS_OK;
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
    snprintf(c->build_dir, sizeof c->build_dir, "%s", opts->build_dir);
    snprintf(c->fsync, sizeof c->fsync, "%s", opts->fsync ? opts->fsync : "");
    c->log_mb = opts->log_mb;
    c->data_dir = opts->data_dir;
    ps_status st = start_coordinator(c, opts, err, err_len);
    for (int i = 0; st == PS_STATUS_OK && i < opts->shards; i++) {
        int index;
        st = bench_cluster_shard_start(c, &index, err, err_len);
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

static void stop(pid_t *pid) {
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    int status = 0;
    waitpid(*pid, &status, 0);
    *pid = 0;
}

void bench_cluster_destroy(bench_cluster *c) {
    if (!c)
        return;
    for (int i = c->n_shards - 1; i >= 0; i--)
        stop(&c->shards[i].pid);
    stop(&c->coord_pid);
    nftw(c->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(c);
}

const char *bench_cluster_coordinator(const bench_cluster *c) {
    return c->coordinator;
}

int bench_cluster_shard_count(const bench_cluster *c) {
    return c->n_shards;
}

const char *bench_cluster_shard_id(const bench_cluster *c, int i) {
    return i >= 0 && i < c->n_shards ? c->shards[i].id : "";
}

const char *bench_cluster_shard_addr(const bench_cluster *c, int i) {
    return i >= 0 && i < c->n_shards ? c->shards[i].addr : "";
}

int bench_cluster_shard_find(const bench_cluster *c, const char *id) {
    for (int i = 0; id && i < c->n_shards; i++)
        if (strcmp(c->shards[i].id, id) == 0)
            return i;
    return -1;
}

ps_status bench_cluster_shard_kill(bench_cluster *c, int i, int64_t *ret_killed_us) {
    if (i < 0 || i >= c->n_shards || c->shards[i].pid <= 0)
        return PS_STATUS_INVALID_ARGUMENT;
    pid_t pid = c->shards[i].pid;
    if (kill(pid, SIGKILL) != 0)
        return PS_STATUS_INTERNAL;
    if (ret_killed_us)
        *ret_killed_us = ps_now_us();
    int status = 0;
    waitpid(pid, &status, 0);
    c->shards[i].pid = 0; /* reaped: its pid may be reused, never signal it again */
    return PS_STATUS_OK;
}

pid_t bench_cluster_shard_pid(const bench_cluster *c, int i) {
    return i < 0 || i >= c->n_shards ? 0 : c->shards[i].pid;
}

uint64_t bench_cluster_shard_rss(const bench_cluster *c, int i) {
    if (i < 0 || i >= c->n_shards || c->shards[i].pid <= 0)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)c->shards[i].pid);
    FILE *f = fopen(path, "r");
    uint64_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", (unsigned long long *)&kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

ps_status bench_cluster_shard_held(const bench_cluster *c, int i, uint64_t *ret_bytes,
                                   uint64_t *ret_sync_bytes, char *err, size_t err_len) {
    if (i < 0 || i >= c->n_shards) {
        ps_set_err(err, err_len, "no shard %d", i);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    rpc_channel *ch = NULL;
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_result res = {0};
    rpc_call_opts opts = {.timeout_ms = HEALTH_TIMEOUT_MS};
    ps_status st = rpc_channel_create(c->shards[i].addr, NULL, &ch);
    if (st == PS_STATUS_OK)
        st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base, &ps__health_response__descriptor,
                      &opts, &resp, &res);
    rpc_channel_destroy(ch);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "health of %s (%s): %s", c->shards[i].id, c->shards[i].addr,
                   res.details);
        return st;
    }
    *ret_bytes = ((Ps__HealthResponse *)resp)->bytes;
    if (ret_sync_bytes)
        *ret_sync_bytes = ((Ps__HealthResponse *)resp)->repl_sync_bytes;
    protobuf_c_message_free_unpacked(resp, NULL);
    return PS_STATUS_OK;
}

void bench_cluster_own_build_dir(char *buf, size_t cap) {
    char exe[512];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(buf, cap, "build");
        return;
    }
    exe[n] = '\0';
    snprintf(buf, cap, "%s", dirname(dirname(exe)));
}
