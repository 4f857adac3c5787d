/* bench_wal.c: benchmark of the shard's write-ahead log (a program, not a test).
 *
 * For each fsync mode (always, group, none), on the disk holding --dir:
 *   MODE_100B, MODE_256KiB   --threads appenders append records of that payload size
 *                            as fast as they can (--small-count records of 100 bytes,
 *                            --large-mb MiB of 256 KiB records); the figure is records
 *                            (and payload MB) over the wall time from the first append
 *                            until the last record is durable (wal_wait)
 *   MODE_acked_100B          --ack-threads threads each append one 100-byte record and
 *                            wait for it, --ack-ops times: acknowledged appends/s, what
 *                            a shard acknowledging pushes one by one could sustain
 *   group_wait_p50/p99       the wal_wait latencies of MODE_acked_100B in group mode
 * Check: reopening each log finds exactly the records appended (recovery counts them).
 * Output: the layout of ps/common/bench_report.h. Exit 1 when an append, a wait or the
 * check fails, 2 on bad arguments or setup failures.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_report.h"
#include "util.h"
#include "wal.h"
#include "wal_format.h"

#define BENCH_MAX_THREADS 64

typedef struct bench_opts {
    const char *dir;
    uint64_t threads, ack_threads, small_count, large_mb, ack_ops;
} bench_opts;

static int parse_args(int argc, char **argv, bench_opts *o) {
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s [--dir D] [--threads T] [--small-count N] [--large-mb M]\n"
                   "          [--ack-threads A] [--ack-ops K]\n"
                   "  --dir D          a fresh directory on the disk to measure, removed\n"
                   "                   afterwards (default ./bench_wal.tmp)\n"
                   "  --threads T      appenders for the throughput rows (default 4)\n"
                   "  --small-count N  100-byte records per mode (default 400000)\n"
                   "  --large-mb M     MiB of 256 KiB records per mode (default 256)\n"
                   "  --ack-threads A  threads appending and waiting (default 16)\n"
                   "  --ack-ops K      appends+waits per such thread (default 200)\n",
                   argv[0]);
            return 1;
        }
        if (!strcmp(a, "--dir") && v) {
            o->dir = v;
            continue;
        }
        if (!((!strcmp(a, "--threads") &&
               ps_parse_u64_range(v, 1, BENCH_MAX_THREADS, &o->threads)) ||
              (!strcmp(a, "--small-count") &&
               ps_parse_u64_range(v, 1, 100000000, &o->small_count)) ||
              (!strcmp(a, "--large-mb") && ps_parse_u64_range(v, 1, 1 << 20, &o->large_mb)) ||
              (!strcmp(a, "--ack-threads") &&
               ps_parse_u64_range(v, 1, BENCH_MAX_THREADS, &o->ack_threads)) ||
              (!strcmp(a, "--ack-ops") && ps_parse_u64_range(v, 1, 1000000, &o->ack_ops)))) {
            fprintf(stderr, "%s: bad argument '%s' (see --help)\n", argv[0], a);
            return -1;
        }
    }
    return 0;
}

/* Removes the log's segments and the directory (nothing else is ever there). */
static void remove_dir(const char *dir) {
    uint64_t *firsts = NULL;
    size_t n = 0;
    if (wal_format_segments_list(dir, &firsts, &n) == PS_STATUS_OK) {
        for (size_t i = 0; i < n; i++) {
            char name[WAL_SEGMENT_NAME_LEN + 1], path[WAL_MAX_PATH + WAL_SEGMENT_NAME_LEN + 2];
            wal_format_segment_name(firsts[i], name);
            snprintf(path, sizeof path, "%s/%s", dir, name);
            unlink(path);
        }
        free(firsts);
    }
    if (rmdir(dir) != 0)
        fprintf(stderr, "bench_wal: could not remove %s: %s\n", dir, strerror(errno));
}

typedef struct worker {
    wal *w;
    size_t payload, count;
    bool wait_each;
    uint64_t last_lsn;
    int64_t *wait_us; /* [count] when wait_each */
    bool ok;
} worker;

static void *work(void *arg) {
    worker *k = arg;
    uint8_t *p = calloc(1, k->payload);
    if (!p)
        return NULL;
    for (size_t i = 0; i < k->count; i++) {
        p[0] = (uint8_t)i;
        if (wal_append(k->w, 1, p, k->payload, &k->last_lsn) != PS_STATUS_OK)
            goto out;
        if (k->wait_each) {
            int64_t t0 = ps_now_us();
            if (wal_wait(k->w, k->last_lsn) != PS_STATUS_OK)
                goto out;
            k->wait_us[i] = ps_now_us() - t0;
        }
    }
    k->ok = true;
out:
    free(p);
    return NULL;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* One case: `threads` workers of `count` records each. Returns the seconds from start
 * to all durable (-1 on failure); latencies (sorted) go to lat when wait_each. */
static double run_case(const char *dir, wal_fsync mode, size_t threads, size_t payload,
                       size_t count, bool wait_each, int64_t *lat) {
    wal_opts o = {.dir = dir, .fsync = mode};
    wal *w = NULL;
    char err[512] = "";
    if (wal_open(&o, NULL, &w, err, sizeof err) != PS_STATUS_OK) {
        fprintf(stderr, "bench_wal: %s\n", err);
        return -1;
    }
    worker k[BENCH_MAX_THREADS];
    pthread_t t[BENCH_MAX_THREADS];
    double secs = -1;
    int64_t t0 = ps_now_us();
    size_t started = 0;
    for (; started < threads; started++) {
        k[started] = (worker){.w = w,
                              .payload = payload,
                              .count = count,
                              .wait_each = wait_each,
                              .wait_us = wait_each ? lat + started * count : NULL};
        if (pthread_create(&t[started], NULL, work, &k[started]) != 0)
            break;
    }
    bool ok = started == threads;
    for (size_t i = 0; i < started; i++) {
        pthread_join(t[i], NULL);
        ok = ok && k[i].ok;
    }
    if (ok && wal_wait(w, wal_last_lsn(w)) == PS_STATUS_OK)
        secs = (double)(ps_now_us() - t0) / 1e6;
    wal_close(w);
    /* check: a reopened log holds exactly what was appended */
    wal_recovery rec;
    if (secs > 0 && (wal_open(&o, &rec, &w, err, sizeof err) != PS_STATUS_OK ||
                     rec.records != threads * count || rec.cut_bytes != 0)) {
        fprintf(stderr, "bench_wal: reopen found %llu records, %zu appended\n",
                (unsigned long long)rec.records, threads * count);
        secs = -1;
    } else if (secs > 0) {
        wal_close(w);
    }
    remove_dir(dir);
    if (wait_each && secs > 0)
        qsort(lat, threads * count, sizeof *lat, cmp_i64);
    return secs;
}

int main(int argc, char **argv) {
    bench_opts o = {.dir = "bench_wal.tmp",
                    .threads = 4,
                    .ack_threads = 16,
                    .small_count = 400000,
                    .large_mb = 256,
                    .ack_ops = 200};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    bench_report *r = NULL;
    if (bench_report_create("bench_wal", "write-ahead log appends/s, MB/s and wal_wait latency",
                            &r) != PS_STATUS_OK)
        return 2;
    bench_report_param(r, "dir", "%s", o.dir);
    bench_report_param(r, "threads", "%" PRIu64, o.threads);
    bench_report_param(r, "small_count", "%" PRIu64, o.small_count);
    bench_report_param(r, "large_mb", "%" PRIu64, o.large_mb);
    bench_report_param(r, "ack_threads", "%" PRIu64, o.ack_threads);
    bench_report_param(r, "ack_ops", "%" PRIu64, o.ack_ops);
    bench_report_param(r, "segment_bytes", "%llu", WAL_DEFAULT_SEGMENT_BYTES);
    bench_report_param(r, "buffer_bytes", "%u", WAL_DEFAULT_BUFFER_BYTES);
    bench_report_param(r, "group_ms", "%u", WAL_DEFAULT_GROUP_MS);

    int64_t *lat = malloc(o.ack_threads * o.ack_ops * sizeof *lat);
    if (!lat)
        return 2;
    static const struct {
        wal_fsync mode;
        const char *name;
    } modes[] = {
        {WAL_FSYNC_ALWAYS, "always"}, {WAL_FSYNC_GROUP, "group"}, {WAL_FSYNC_NONE, "none"}};
    const size_t large = 256 * 1024;
    int failures = 0;
    char name[64], key[64];
    for (size_t m = 0; m < 3; m++) {
        const char *mn = modes[m].name;
        size_t per = (size_t)((o.small_count + o.threads - 1) / o.threads);
        double s = run_case(o.dir, modes[m].mode, o.threads, 100, per, false, NULL);
        double n = (double)(per * o.threads);
        failures += s < 0;
        snprintf(name, sizeof name, "%s_100B", mn);
        snprintf(key, sizeof key, "%s_100B_appends_s", mn);
        bench_report_row(r, name, s > 0 ? n / s : 0, 0, "appends/s", BENCH_TARGET_NONE, 0, key);
        bench_report_row(r, name, s > 0 ? n * 100 / s / 1e6 : 0, 1, "MB/s", BENCH_TARGET_NONE, 0,
                         NULL);

        per = (size_t)((o.large_mb * 4 + o.threads - 1) / o.threads);
        s = run_case(o.dir, modes[m].mode, o.threads, large, per, false, NULL);
        n = (double)(per * o.threads);
        failures += s < 0;
        snprintf(name, sizeof name, "%s_256KiB", mn);
        snprintf(key, sizeof key, "%s_256KiB_MB_s", mn);
        bench_report_row(r, name, s > 0 ? n / s : 0, 0, "appends/s", BENCH_TARGET_NONE, 0, NULL);
        bench_report_row(r, name, s > 0 ? n * (double)large / s / 1e6 : 0, 1, "MB/s",
                         BENCH_TARGET_NONE, 0, key);

        s = run_case(o.dir, modes[m].mode, o.ack_threads, 100, o.ack_ops, true, lat);
        n = (double)(o.ack_threads * o.ack_ops);
        failures += s < 0;
        snprintf(name, sizeof name, "%s_acked_100B", mn);
        snprintf(key, sizeof key, "%s_acked_s", mn);
        bench_report_row(r, name, s > 0 ? n / s : 0, 0, "appends/s", BENCH_TARGET_NONE, 0, key);
        if (modes[m].mode == WAL_FSYNC_GROUP && s > 0) {
            size_t cnt = o.ack_threads * o.ack_ops;
            bench_report_row(r, "group_wait_p50", (double)lat[cnt / 2], 0, "us", BENCH_TARGET_NONE,
                             0, "group_wait_p50_us");
            bench_report_row(r, "group_wait_p99", (double)lat[cnt * 99 / 100], 0, "us",
                             BENCH_TARGET_NONE, 0, "group_wait_p99_us");
        }
    }
    if (failures)
        bench_report_note(r, "%d cases failed (see stderr)", failures);
    bench_report_print(r, stdout);
    bench_report_destroy(r);
    free(lat);
    return failures ? 1 : 0;
}
