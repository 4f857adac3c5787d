/* rpc_common.c: status mapping, queue waits, and process helpers (allocator tuning,
 * signals) shared by the rpc server and client. Message encoding is in rpc_bytes.c. */
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "rpc_internal.h"

/* ------------------------------------------------------------------ status codes --- */

int rpc_code_from_status(ps_status st) {
    switch (st) {
    case PS_STATUS_OK:
        return GRPC_STATUS_OK;
    case PS_STATUS_CANCELLED:
        return GRPC_STATUS_CANCELLED;
    case PS_STATUS_INVALID_ARGUMENT:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case PS_STATUS_DEADLINE_EXCEEDED:
        return GRPC_STATUS_DEADLINE_EXCEEDED;
    case PS_STATUS_NOT_FOUND:
        return GRPC_STATUS_NOT_FOUND;
    case PS_STATUS_ALREADY_EXISTS:
        return GRPC_STATUS_ALREADY_EXISTS;
    case PS_STATUS_RESOURCE_EXHAUSTED:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case PS_STATUS_FAILED_PRECONDITION:
        return GRPC_STATUS_FAILED_PRECONDITION;
    case PS_STATUS_OUT_OF_RANGE:
        return GRPC_STATUS_OUT_OF_RANGE;
    case PS_STATUS_UNIMPLEMENTED:
        return GRPC_STATUS_UNIMPLEMENTED;
    case PS_STATUS_INTERNAL:
        return GRPC_STATUS_INTERNAL;
    case PS_STATUS_UNAVAILABLE:
        return GRPC_STATUS_UNAVAILABLE;
    case PS_STATUS_NO_MEMORY:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case PS_STATUS_IO:
        return GRPC_STATUS_INTERNAL;
    case PS_STATUS_PARSE:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case PS_STATUS_WRONG_EPOCH:
        return GRPC_STATUS_ABORTED;
    }
    return GRPC_STATUS_UNKNOWN;
}

ps_status rpc_status_from_code(int code) {
    switch (code) {
    case GRPC_STATUS_OK:
        return PS_STATUS_OK;
    case GRPC_STATUS_CANCELLED:
        return PS_STATUS_CANCELLED;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return PS_STATUS_INVALID_ARGUMENT;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return PS_STATUS_DEADLINE_EXCEEDED;
    case GRPC_STATUS_NOT_FOUND:
        return PS_STATUS_NOT_FOUND;
    case GRPC_STATUS_ALREADY_EXISTS:
        return PS_STATUS_ALREADY_EXISTS;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return PS_STATUS_RESOURCE_EXHAUSTED;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return PS_STATUS_FAILED_PRECONDITION;
    case GRPC_STATUS_ABORTED:
        return PS_STATUS_WRONG_EPOCH;
    case GRPC_STATUS_OUT_OF_RANGE:
        return PS_STATUS_OUT_OF_RANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return PS_STATUS_UNIMPLEMENTED;
    case GRPC_STATUS_UNAVAILABLE:
        return PS_STATUS_UNAVAILABLE;
    case GRPC_STATUS_PERMISSION_DENIED:
    case GRPC_STATUS_UNAUTHENTICATED:
        return PS_STATUS_FAILED_PRECONDITION;
    default:
        return PS_STATUS_INTERNAL; /* UNKNOWN, INTERNAL, DATA_LOSS, anything new */
    }
}

const char *rpc_code_name(int code) {
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0]))
        return "UNKNOWN";
    return names[code];
}

/* ------------------------------------------------------------------ library init --- */

static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;
static int library_refs;

void rpc_library_ref(void) {
    pthread_mutex_lock(&library_lock);
    if (library_refs++ == 0)
        grpc_init();
    pthread_mutex_unlock(&library_lock);
}

/* Memory one thread frees is reused only by threads of the same malloc arena: gRPC's
 * threads receive, the workers build and free value blocks, and with an arena per
 * thread each keeps its own free memory (3 shards holding 324 MiB of values after
 * uploading and adding to a 256 MiB model: 668 MiB resident; with one arena 588,
 * throughput unchanged on 2 cores). One arena per 4 CPUs. It must be set before the
 * threads start (gRPC's own start in grpc_init). */
static void limit_arenas(void) {
    int cpus = rpc_cpu_count();
    mallopt(M_ARENA_MAX, cpus >= 8 ? cpus / 4 : 1);
}

int rpc_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void rpc_process_init(void) {
    limit_arenas();
    rpc_library_ref(); /* never released */
}

void rpc_library_unref(void) {
    pthread_mutex_lock(&library_lock);
    if (--library_refs == 0)
        grpc_shutdown();
    pthread_mutex_unlock(&library_lock);
}

ps_status rpc_flatten(grpc_byte_buffer *bb, void **ret_data, size_t *ret_len) {
    grpc_byte_buffer_reader reader;
    size_t len = 0;
    grpc_slice all = grpc_empty_slice();
    if (bb) {
        if (!grpc_byte_buffer_reader_init(&reader, bb))
            return PS_STATUS_INTERNAL;
        all = grpc_byte_buffer_reader_readall(&reader);
        grpc_byte_buffer_reader_destroy(&reader);
        len = GRPC_SLICE_LENGTH(all);
    }
    void *data = malloc(len ? len : 1);
    if (!data) {
        grpc_slice_unref(all);
        return PS_STATUS_NO_MEMORY;
    }
    if (len)
        memcpy(data, GRPC_SLICE_START_PTR(all), len);
    grpc_slice_unref(all);
    *ret_data = data;
    *ret_len = len;
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------ waiting --- */

int64_t rpc_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

grpc_event rpc_cq_wait(grpc_completion_queue *cq, void *tag, gpr_timespec deadline, int spin_us) {
    grpc_event ev;
    if (spin_us > 0) {
        gpr_timespec past = gpr_inf_past(GPR_CLOCK_MONOTONIC);
        int64_t until = rpc_now_us() + spin_us;
        do {
            ev = tag ? grpc_completion_queue_pluck(cq, tag, past, NULL)
                     : grpc_completion_queue_next(cq, past, NULL);
            if (ev.type != GRPC_QUEUE_TIMEOUT)
                return ev;
        } while (rpc_now_us() < until);
    }
    return tag ? grpc_completion_queue_pluck(cq, tag, deadline, NULL)
               : grpc_completion_queue_next(cq, deadline, NULL);
}

void rpc_arg_int(grpc_arg *args, size_t *n, const char *key, int value) {
    memset(&args[*n], 0, sizeof args[*n]);
    args[*n].type = GRPC_ARG_INTEGER;
    args[*n].key = (char *)key;
    args[(*n)++].value.integer = value;
}

int rpc_keepalive_ms(int ms, int dflt) {
    if (ms == 0)
        return dflt;
    return ms > 0 && ms < RPC_MIN_KEEPALIVE_MS ? RPC_MIN_KEEPALIVE_MS : ms;
}

void rpc_args_keepalive(grpc_arg *args, size_t *n, int ms) {
    if (ms <= 0)
        return;
    rpc_arg_int(args, n, GRPC_ARG_KEEPALIVE_TIME_MS, ms);
    rpc_arg_int(args, n, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
    rpc_arg_int(args, n, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
}

gpr_timespec rpc_deadline_after_ms(int64_t ms) {
    if (ms <= 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* ------------------------------------------------------------------ process --- */

void rpc_tune_allocator(void) {
    /* gRPC reads messages into multi-megabyte buffers; with glibc's defaults each one is
     * an mmap that is unmapped on free, so every message faults its pages in again. */
    mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
    limit_arenas(); /* for threads started from now on */
}

void rpc_signals_block(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

int rpc_signals_wait(void) {
    sigset_t set;
    int sig = 0;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}
