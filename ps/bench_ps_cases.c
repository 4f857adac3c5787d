/* bench_ps_cases.c: see bench_ps_cases.h. */
#include "bench_ps_cases.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Nanoseconds of CPU process `clock` has used (every thread); -1 when unreadable. */
static int64_t cpu_ns(clockid_t clock) {
    struct timespec t;
    return clock_gettime(clock, &t) == 0 ? (int64_t)t.tv_sec * 1000000000 + t.tv_nsec : -1;
}

/* A tensor "t" of `floats` floats cut into default chunks (shape points into *shape). */
static void tensor_info(uint64_t floats, int64_t *shape, Ps__TensorInfo *t) {
    ps__tensor_info__init(t);
    t->name = "t";
    t->dtype = "FP32";
    *shape = (int64_t)floats;
    t->n_shape = 1;
    t->shape = shape;
    t->chunk_floats = PS_DEFAULT_CHUNK_FLOATS;
    t->chunks = (uint32_t)((floats + PS_DEFAULT_CHUNK_FLOATS - 1) / PS_DEFAULT_CHUNK_FLOATS);
}

static double gbs(uint64_t bytes, int64_t us) {
    return us > 0 ? (double)bytes / (double)us / 1e3 : 0;
}

/* Another process's CPU clock (the shard's), when it can be read. */
typedef struct proc_clock {
    bool ok;
    clockid_t id;
} proc_clock;

static proc_clock proc_clock_of(pid_t pid) {
    proc_clock c = {.ok = false};
    c.ok = pid > 0 && clock_getcpuclockid(pid, &c.id) == 0;
    return c;
}

/* Nanoseconds of CPU the process has used; -1 when unreadable. */
static int64_t proc_cpu_ns(const proc_clock *c) {
    return c->ok ? cpu_ns(c->id) : -1;
}

/* CPU time of this process plus the shard's, in ns; -1 when unreadable. */
static int64_t both_cpu_ns(const proc_clock *shard) {
    int64_t mine = cpu_ns(CLOCK_PROCESS_CPUTIME_ID), theirs = proc_cpu_ns(shard);
    return mine >= 0 && theirs >= 0 ? mine + theirs : -1;
}

ps_status bench_case_dense(ps_client *pc, const char *model, uint64_t floats, int reps,
                           pid_t shard_pid, bench_dense *ret, char *err, size_t err_len) {
    const proc_clock shard = proc_clock_of(shard_pid);
    int64_t cpu[2] = {0, 0}, wall[2] = {0, 0}; /* push, pull */
    bool cpu_ok = shard.ok;
    float *src = malloc(floats * 4), *dst = malloc(floats * 4);
    ps_status st = PS_STATUS_OK;
    if (!src || !dst) {
        ps_set_err(err, err_len, "out of memory for %llu floats", (unsigned long long)floats);
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    for (uint64_t i = 0; i < floats; i++)
        src[i] = (float)(i % 1000003) * 0.5f;
    int64_t shape;
    Ps__TensorInfo t;
    tensor_info(floats, &shape, &t);
    bench_dense best = {0};
    for (int r = 0; r < reps && st == PS_STATUS_OK; r++) {
        int64_t c0 = both_cpu_ns(&shard), t0 = ps_now_us();
        st = ps_client_push_tensor(pc, model, 1, &t, PS__PUSH_OP__PUSH_ASSIGN, src, floats);
        int64_t t1 = ps_now_us(), c1 = both_cpu_ns(&shard);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "push: %s", ps_client_error(pc));
            break;
        }
        memset(dst, 0, floats * 4);
        int64_t c2 = both_cpu_ns(&shard), t2 = ps_now_us();
        st = ps_client_pull_tensor(pc, model, 1, &t, dst, floats, NULL);
        int64_t t3 = ps_now_us(), c3 = both_cpu_ns(&shard);
        cpu_ok = cpu_ok && c0 >= 0 && c1 >= c0 && c2 >= 0 && c3 >= c2;
        cpu[0] += c1 - c0;
        cpu[1] += c3 - c2;
        wall[0] += t1 - t0;
        wall[1] += t3 - t2;
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "pull: %s", ps_client_error(pc));
            break;
        }
        if (memcmp(src, dst, floats * 4) != 0) {
            ps_set_err(err, err_len, "pulled values of %s differ from the pushed ones", model);
            st = PS_STATUS_INTERNAL;
            break;
        }
        double push = gbs(floats * 4, t1 - t0), pull = gbs(floats * 4, t3 - t2);
        best.push_gbs = push > best.push_gbs ? push : best.push_gbs;
        best.pull_gbs = pull > best.pull_gbs ? pull : best.pull_gbs;
    }
    if (st == PS_STATUS_OK) {
        best.push_busy = cpu_ok && wall[0] > 0 ? (double)cpu[0] / 1e3 / (double)wall[0] : 0;
        best.pull_busy = cpu_ok && wall[1] > 0 ? (double)cpu[1] / 1e3 / (double)wall[1] : 0;
        *ret = best;
    }
out:
    free(src);
    free(dst);
    return st;
}

ps_status bench_case_dense_add(ps_client *pc, const char *model, uint64_t floats, char *err,
                               size_t err_len) {
    float *delta = malloc(floats * 4);
    if (!delta) {
        ps_set_err(err, err_len, "out of memory for %llu floats", (unsigned long long)floats);
        return PS_STATUS_NO_MEMORY;
    }
    for (uint64_t i = 0; i < floats; i++)
        delta[i] = 0.5f;
    int64_t shape;
    Ps__TensorInfo t;
    tensor_info(floats, &shape, &t);
    ps_status st = ps_client_push_tensor(pc, model, 1, &t, PS__PUSH_OP__PUSH_ADD, delta, floats);
    if (st != PS_STATUS_OK)
        ps_set_err(err, err_len, "add: %s", ps_client_error(pc));
    free(delta);
    return st;
}

ps_status bench_case_sparse(ps_client *pc, const char *model, uint32_t dim, size_t n, int reps,
                            pid_t shard_pid, bench_sparse *ret, char *err, size_t err_len) {
    const proc_clock shard = proc_clock_of(shard_pid);
    int64_t client_cpu = 0, shard_cpu = 0;
    bool cpu_ok = shard.ok;
    uint64_t *ids = malloc(n * sizeof *ids);
    float *grad = malloc(n * dim * sizeof *grad);
    ps_status st = PS_STATUS_OK;
    if (!ids || !grad) {
        ps_set_err(err, err_len, "out of memory for %zu rows", n);
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = splitmix64(i); /* hashed ids, as a recommender's feature ids */
    for (size_t i = 0; i < n * dim; i++)
        grad[i] = 0.01f * (float)(i % 7);
    table_spec spec = {.dim = dim, .init = TABLE_INIT_ZEROS, .optimizer = OPTIM_ADAGRAD};
    optim_spec adagrad;
    optim_spec_defaults(OPTIM_ADAGRAD, &adagrad);
    ps_table_ref ref = {.model = model, .table = "emb", .spec = &spec};
    double best = 0;
    for (int r = 0; r <= reps && st == PS_STATUS_OK; r++) { /* round 0 creates the rows */
        ps_push_train train = {.optimizer = &adagrad};
        const int64_t c0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID), s0 = proc_cpu_ns(&shard);
        int64_t t0 = ps_now_us();
        st = ps_client_push_rows(pc, &ref, PS__PUSH_OP__PUSH_OPTIMIZE, &train, n, ids, grad, NULL);
        int64_t t1 = ps_now_us();
        const int64_t c1 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID), s1 = proc_cpu_ns(&shard);
        if (r > 0) { /* round 0 creates the rows */
            cpu_ok = cpu_ok && c0 >= 0 && c1 >= c0 && s0 >= 0 && s1 >= s0;
            client_cpu += c1 - c0;
            shard_cpu += s1 - s0;
        }
        if (st != PS_STATUS_OK)
            ps_set_err(err, err_len, "push rows: %s", ps_client_error(pc));
        double rate = t1 > t0 ? (double)n * 1e6 / (double)(t1 - t0) : 0;
        if (r > 0 && rate > best)
            best = rate;
    }
    if (st == PS_STATUS_OK) {
        const double rows = (double)n * reps;
        *ret = (bench_sparse){.rows_s = best,
                              .client_ns_row = cpu_ok ? (double)client_cpu / rows : 0,
                              .shard_ns_row = cpu_ok ? (double)shard_cpu / rows : 0};
    }
out:
    free(ids);
    free(grad);
    return st;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------- round trips --- */

/* A process that echoes 4-byte messages on the loopback connection it accepts (blocking
 * reads and writes, Nagle off): the raw TCP round trip the pushes are set against. */
typedef struct echo_peer {
    pid_t pid;
    int fd; /* the benchmark's end */
} echo_peer;

/* How io_full moves its bytes: blocking write, blocking read, or reads polling
 * (non-blocking reads in a loop, never blocking, as the client's unary waits poll
 * before they block: RPC_DEFAULT_CLIENT_SPIN_US). */
typedef enum io_how { IO_WRITE, IO_READ, IO_READ_POLLING } io_how;

static bool io_full(int fd, void *buf, size_t len, io_how how) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = how == IO_WRITE  ? write(fd, p, len)
                    : how == IO_READ ? read(fd, p, len)
                                     : recv(fd, p, len, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR ||
                      (how == IO_READ_POLLING && (errno == EAGAIN || errno == EWOULDBLOCK))))
            continue;
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static void echo_stop(echo_peer *e) {
    if (e->fd >= 0)
        close(e->fd); /* the echo sees end of file and exits */
    else if (e->pid > 0)
        kill(e->pid, SIGKILL); /* never connected: it waits in accept */
    if (e->pid > 0 && waitpid(e->pid, NULL, 0) != e->pid) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
    }
    e->fd = -1;
    e->pid = 0;
}

static ps_status echo_start(echo_peer *e, char *err, size_t err_len) {
    e->pid = 0;
    e->fd = -1;
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1) != 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
        ps_set_err(err, err_len, "echo socket: %s", strerror(errno));
        if (lfd >= 0)
            close(lfd);
        return PS_STATUS_IO;
    }
    fflush(NULL);
    const pid_t parent = getpid();
    e->pid = fork();
    if (e->pid == 0) { /* the echo: one connection, then exit; never outlives us */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        for (int fd = 0; fd <= 2 && null >= 0; fd++)
            dup2(null, fd);      /* nor holds our output open */
        if (getppid() != parent) /* it died before the line above */
            _exit(0);
        int c = accept(lfd, NULL, NULL);
        uint32_t m;
        if (c >= 0)
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (c >= 0 && io_full(c, &m, sizeof m, IO_READ) && io_full(c, &m, sizeof m, IO_WRITE)) {
        }
        _exit(0);
    }
    if (e->pid < 0) {
        ps_set_err(err, err_len, "fork: %s", strerror(errno));
        close(lfd);
        return PS_STATUS_IO;
    }
    e->fd = socket(AF_INET, SOCK_STREAM, 0);
    bool ok = e->fd >= 0 && connect(e->fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(lfd);
    if (!ok) {
        ps_set_err(err, err_len, "connect to the echo: %s", strerror(errno));
        echo_stop(e);
        return PS_STATUS_IO;
    }
    setsockopt(e->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return PS_STATUS_OK;
}

/* What the round-trip case measures, and the state of each kind while it runs. */
enum { RTT_PUSH, RTT_GRPC, RTT_TCP, RTT_TCP_POLL, RTT_KINDS };
typedef struct rtt_state {
    ps_client *pc;
    uint64_t key;
    rpc_channel *ch; /* to the shard, for the empty calls */
    echo_peer echo;
    char *err;
    size_t err_len;
} rtt_state;

static ps_status rtt_one(rtt_state *s, int kind) {
    if (kind == RTT_PUSH) {
        const float one = 1.0f, *src = &one;
        uint32_t len = 1;
        ps_status st =
            ps_client_push(s->pc, PS__PUSH_OP__PUSH_ADD, 1, &s->key, &src, &len, NULL, NULL);
        if (st != PS_STATUS_OK)
            ps_set_err(s->err, s->err_len, "small push: %s", ps_client_error(s->pc));
        return st;
    }
    if (kind == RTT_GRPC) {
        Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        rpc_result res = {0};
        rpc_call_opts opts = {.timeout_ms = 5000};
        ps_status st = rpc_call(s->ch, "/ps.ParameterServer/Health", &req.base,
                                &ps__health_response__descriptor, &opts, &resp, &res);
        if (st != PS_STATUS_OK)
            ps_set_err(s->err, s->err_len, "health: %s", res.details);
        else
            protobuf_c_message_free_unpacked(resp, NULL);
        return st;
    }
    uint32_t m = 0x5053; /* "PS" */
    if (!io_full(s->echo.fd, &m, sizeof m, IO_WRITE) ||
        !io_full(s->echo.fd, &m, sizeof m, kind == RTT_TCP_POLL ? IO_READ_POLLING : IO_READ)) {
        ps_set_err(s->err, s->err_len, "echo round trip: %s", strerror(errno));
        return PS_STATUS_IO;
    }
    return PS_STATUS_OK;
}

#define RTT_BLOCK 100 /* calls of one kind in a row before the next kind's turn */

ps_status bench_case_rtt(ps_client *pc, int calls, pid_t shard_pid, bench_rtt *ret, char *err,
                         size_t err_len) {
    const proc_clock shard = proc_clock_of(shard_pid);
    bool clocked = shard.ok; /* every block's reading was good */
    int64_t shard_ns[RTT_KINDS] = {0};
    int64_t *us = malloc((size_t)calls * RTT_KINDS * sizeof *us);
    rtt_state s = {.pc = pc,
                   .key = ps_key_dense("bench_ps_rtt", 1, "one", 0),
                   .err = err,
                   .err_len = err_len,
                   .echo = {.fd = -1}};
    ps_status st = us ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
    if (!us)
        ps_set_err(err, err_len, "out of memory");
    const float zero = 0.0f, *src = &zero;
    uint32_t len = 1;
    if (st == PS_STATUS_OK && (st = ps_client_push(pc, PS__PUSH_OP__PUSH_ASSIGN, 1, &s.key, &src,
                                                   &len, NULL, NULL)) != PS_STATUS_OK)
        ps_set_err(err, err_len, "small push: %s", ps_client_error(pc));
    if (st == PS_STATUS_OK && ps_client_shard_count(pc) > 0 &&
        (st = rpc_channel_create(ps_client_shard_addr(pc, 0), NULL, &s.ch)) != PS_STATUS_OK)
        ps_set_err(err, err_len, "channel to %s", ps_client_shard_addr(pc, 0));
    if (st == PS_STATUS_OK && !s.ch) {
        ps_set_err(err, err_len, "no shard on the ring");
        st = PS_STATUS_UNAVAILABLE;
    }
    if (st == PS_STATUS_OK)
        st = echo_start(&s.echo, err, err_len);
    /* warm-up: calls / 10 of each kind; then blocks of each kind in turn */
    for (int k = 0; k < RTT_KINDS && st == PS_STATUS_OK; k++)
        for (int i = 0; i < calls / 10 && st == PS_STATUS_OK; i++)
            st = rtt_one(&s, k);
    for (int at = 0; at < calls && st == PS_STATUS_OK; at += RTT_BLOCK) {
        const int end = at + RTT_BLOCK < calls ? at + RTT_BLOCK : calls;
        for (int k = 0; k < RTT_KINDS && st == PS_STATUS_OK; k++) {
            const int64_t cpu0 = proc_cpu_ns(&shard);
            for (int i = at; i < end && st == PS_STATUS_OK; i++) {
                int64_t t0 = ps_now_us();
                st = rtt_one(&s, k);
                us[(size_t)k * (size_t)calls + (size_t)i] = ps_now_us() - t0;
            }
            const int64_t cpu1 = proc_cpu_ns(&shard);
            clocked = clocked && cpu0 >= 0 && cpu1 >= cpu0;
            shard_ns[k] += clocked ? cpu1 - cpu0 : 0;
        }
    }
    if (st == PS_STATUS_OK) { /* every ADD of 1 counted once: the value is their number */
        float got = -1, *dst = &got;
        uint32_t len1 = 1;
        const float want = (float)(calls / 10 + calls);
        if ((st = ps_client_pull(pc, 1, &s.key, &dst, &len1, NULL)) != PS_STATUS_OK) {
            ps_set_err(err, err_len, "pull: %s", ps_client_error(pc));
        } else if (got != want) {
            ps_set_err(err, err_len, "after %.0f ADDs of 1 the value is %g", want, got);
            st = PS_STATUS_INTERNAL;
        }
    }
    if (st == PS_STATUS_OK) {
        double *out[RTT_KINDS][2] = {{&ret->push_p50, &ret->push_p99},
                                     {&ret->grpc_p50, &ret->grpc_p99},
                                     {&ret->tcp_p50, &ret->tcp_p99},
                                     {&ret->tcp_poll_p50, &ret->tcp_poll_p99}};
        for (int k = 0; k < RTT_KINDS; k++) {
            int64_t *v = us + (size_t)k * (size_t)calls;
            qsort(v, (size_t)calls, sizeof *v, cmp_i64);
            *out[k][0] = (double)v[calls / 2];
            *out[k][1] = (double)v[(size_t)calls * 99 / 100];
        }
        ret->push_shard_cpu_us = clocked ? (double)shard_ns[RTT_PUSH] / 1e3 / calls : 0;
        ret->grpc_shard_cpu_us = clocked ? (double)shard_ns[RTT_GRPC] / 1e3 / calls : 0;
    }
    echo_stop(&s.echo);
    rpc_channel_destroy(s.ch);
    free(us);
    return st;
}

ps_status bench_case_held_bytes(ps_client *pc, uint64_t *ret_bytes, char *err, size_t err_len) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < ps_client_shard_count(pc); i++) {
        rpc_channel *ch = NULL;
        ps_status st = rpc_channel_create(ps_client_shard_addr(pc, i), NULL, &ch);
        Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        rpc_result res = {0};
        rpc_call_opts opts = {.timeout_ms = 5000};
        if (st == PS_STATUS_OK)
            st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base,
                          &ps__health_response__descriptor, &opts, &resp, &res);
        rpc_channel_destroy(ch);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "health of %s: %s", ps_client_shard_addr(pc, i), res.details);
            return st;
        }
        total += ((Ps__HealthResponse *)resp)->bytes;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    *ret_bytes = total;
    return PS_STATUS_OK;
}
