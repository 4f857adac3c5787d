/* main.c: ps-shard, a parameter-server shard: its flags, and the wiring of the shard
 * context (shard_ctx.h: store, update log, placement, handlers) to the process
 * runtime (ps/runtime: serving, registration, heartbeats, the ring watch, signals).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "flags.h"
#include "log.h"
#include "runtime.h"
#include "dedup.h"
#include "shard_ctx.h"
#include "shard_limits.h"
#include "util.h"

#define SHARD_STREAM_MARGIN 16 /* rpc streams beyond the subscribers (spare) */

typedef struct shard_main {
    shard_ctx *ctx;
    ps_runtime *rt;
    bool log_failure_said; /* the write-ahead log failed: said once */
} shard_main;

static void on_ring(void *user, const Ps__Ring *ring) {
    shard_main *m = user;
    shard_ring_change ch;
    if (shard_ring_install(m->ctx, ring, &ch) != PS_STATUS_OK)
        PS_ERROR("the coordinator sent a ring that does not parse (epoch %llu)",
                 (unsigned long long)ring->epoch);
    else if (ch.installed)
        PS_INFO("ring epoch %llu: %u shards; %s", (unsigned long long)ch.epoch, ch.nodes,
                ch.member ? "member" : "not a member");
}

static void on_heartbeat(void *user, Ps__HeartbeatRequest *req) {
    shard_main *m = user;
    shard_heartbeat_fill(m->ctx, req);
    char why[256];
    if (!m->log_failure_said && shard_journal_failed(m->ctx, why, sizeof why)) {
        PS_ERROR("the write-ahead log failed (%s): this shard refuses every write (UNAVAILABLE, "
                 "not acknowledged) and still serves reads; free space, then restart it",
                 why);
        m->log_failure_said = true;
    }
}

static void refresh_ring(void *arg) {
    shard_main *m = arg;
    if (m->rt)
        ps_runtime_refresh_ring(m->rt);
}

/* One line per snapshot the shard takes (on the snapshot thread). */
static void on_snapshot(void *user, ps_status st, const snapshot_info *info, const char *err) {
    (void)user;
    if (st != PS_STATUS_OK)
        PS_ERROR("snapshot failed (the log keeps growing until one succeeds): %s", err);
    else
        PS_INFO("snapshot %s: LSN %llu, %llu chunks, %llu rows, %.1f MiB in %lld ms", info->path,
                (unsigned long long)info->lsn, (unsigned long long)info->chunks,
                (unsigned long long)info->rows, (double)info->bytes / (1 << 20),
                (long long)info->elapsed_ms);
}

static uint64_t half_of_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 2 : 0;
}

int main(int argc, char **argv) {
    const char *id = NULL, *listen = "127.0.0.1:0", *coord_flag = NULL, *port_file = NULL;
    int weight = 1, log_mb = SHARD_DEFAULT_LOG_MB, max_subs = SHARD_DEFAULT_MAX_SUBSCRIBERS;
    int gc_settle_ms = SHARD_GC_SETTLE_MS;
    int threads = 0;
    uint64_t max_bytes = half_of_memory();
    const char *data_dir = NULL, *fsync_mode = "group";
    int snapshot_mb = (int)(SNAPSHOT_DEFAULT_LOG_BYTES >> 20);
    int dedup_mb = (int)((DEDUP_DEFAULT_MAX_KEYS * sizeof(uint64_t)) >> 20);
    const ps_flag flags[] = {
        {"id", PS_FLAG_STRING, &id, 0, 0, "ID", "this shard's unique name", true},
        {"listen", PS_FLAG_STRING, &listen, 0, 0, "HOST:PORT",
         "address to serve on (port 0: a free one)", false},
        {"coordinator", PS_FLAG_STRING, &coord_flag, 0, 0, "HOST:PORT",
         "the coordinator (else $PS_COORDINATOR, else COORDINATOR= in run/cluster.env)", false},
        {"weight", PS_FLAG_INT, &weight, 1, 1000, "N", "relative capacity on the ring", false},
        {"log-mb", PS_FLAG_INT, &log_mb, 1, 1 << 20, "N", "memory kept for the update log", false},
        {"max-bytes", PS_FLAG_U64, &max_bytes, 0, 0, "BYTES",
         "value memory the chunks may take; an ASSIGN of new keys past it is refused (0: no "
         "limit; the default is half the machine's memory)",
         false},
        {"max-subscribers", PS_FLAG_INT, &max_subs, 1, SHARD_MAX_MAX_SUBSCRIBERS, "N",
         "Subscribe streams open at once", false},
        {"threads", PS_FLAG_INT, &threads, 0, 1024, "N", "rpc worker threads (0: one per CPU)",
         false},
        {"data-dir", PS_FLAG_STRING, &data_dir, 0, 0, "DIR",
         "keep a write-ahead log of every push and delete and snapshots of the data there; at "
         "start load the newest snapshot and replay the log after it, so a restart loses no "
         "acknowledged update (dense chunks, sparse rows, optimizer state); without it the "
         "shard holds its data in memory only",
         false},
        {"fsync", PS_FLAG_STRING, &fsync_mode, 0, 0, "MODE",
         "with --data-dir: always (answer after fsync), group (fsync at most every 5 ms, "
         "answer once on disk) or none (answer once written to the kernel)",
         false},
        {"gc-settle-ms", PS_FLAG_INT, &gc_settle_ms, -1, 86400000, "MS",
         "once the ring stayed the same this long with no change pending, drop the chunks and "
         "sparse rows it no longer gives this shard (copies a ring change left behind), and "
         "look again this often; -1: never",
         false},
        {"snapshot-log-mb", PS_FLAG_INT, &snapshot_mb, 1, 1 << 20, "N",
         "with --data-dir: write a snapshot of every chunk and row each time the log grew by N "
         "MiB since the last one (and at a clean shutdown), taken while pushes go on; then "
         "the log it covers is deleted, so a restart loads the snapshot and replays at most "
         "about N MiB of log",
         false},
        {"dedup-mb", PS_FLAG_INT, &dedup_mb, 1, 1 << 20, "N",
         "memory for the request ids of recent pushes and the keys each applied (8 bytes a "
         "key, about 256 a request): a push sent again (a client's retry, or a caller's with its "
         "request id) is "
         "applied at most once while its id is remembered; the oldest are forgotten first, and "
         "a warning says when that reaches back less than 30 s (Health: dedup_window_ms)",
         false},
        {"port-file", PS_FLAG_STRING, &port_file, 0, 0, "FILE",
         "write the bound port there once serving", false},
    };
    ps_program prog = {.name = "ps-shard",
                       .summary = "A parameter-server shard: holds the chunks the ring places "
                                  "on it, answers Pull/Push/Stat/Delete, streams applied updates "
                                  "to subscribers.",
                       .flags = flags,
                       .n_flags = sizeof flags / sizeof flags[0],
                       .id = &id,
                       .coordinator = &coord_flag};
    int fr = ps_runtime_start_program(&prog, argc, argv);
    if (fr != PS_FLAGS_CONTINUE)
        return fr;
    const char *coordinator = prog.coordinator_addr;
    char err[512];

    shard_main m = {0}; /* hooks get a pointer; every thread ends before main returns */
    shard_ctx_opts o = {.id = id,
                        .max_bytes = max_bytes,
                        .log_bytes = (uint64_t)log_mb << 20,
                        .dedup_keys = ((uint64_t)dedup_mb << 20) / sizeof(uint64_t),
                        .max_subscribers = (uint32_t)max_subs,
                        .ring_refresh = refresh_ring,
                        .ring_refresh_arg = &m,
                        .snapshot_log_bytes = (uint64_t)snapshot_mb << 20,
                        .on_snapshot = on_snapshot,
                        .gc_settle_ms = gc_settle_ms};
    ps_runtime_opts ro = {.program = "ps-shard",
                          .id = id,
                          .coordinator = coordinator,
                          .role = PS__NODE_ROLE__ROLE_SHARD,
                          .weight = (uint32_t)weight,
                          .hooks = {.user = &m, .ring = on_ring, .heartbeat = on_heartbeat}};
    int rc = 1;
    wal_fsync mode = WAL_FSYNC_GROUP;
    if (strcmp(fsync_mode, "always") == 0)
        mode = WAL_FSYNC_ALWAYS;
    else if (strcmp(fsync_mode, "none") == 0)
        mode = WAL_FSYNC_NONE;
    else if (strcmp(fsync_mode, "group") != 0) {
        PS_ERROR("--fsync wants always, group or none, not '%s'", fsync_mode);
        return 2;
    }
    ps_status st = shard_ctx_create(&o, &m.ctx);
    if (st == PS_STATUS_OK && data_dir) {
        snapshot_recovery rec;
        int64_t t0 = ps_now_ms();
        st = shard_ctx_open_journal(m.ctx, data_dir, mode, &rec, err, sizeof err);
        if (st != PS_STATUS_OK) {
            PS_ERROR("cannot recover the write-ahead log or the snapshot in %s: %s", data_dir, err);
            goto out;
        }
        if (rec.loaded)
            PS_INFO("loaded snapshot %s (LSN %llu: %llu chunks, %llu rows) in %lld ms",
                    rec.snap.path, (unsigned long long)rec.snap.lsn,
                    (unsigned long long)rec.snap.chunks, (unsigned long long)rec.snap.rows,
                    (long long)rec.snap.elapsed_ms);
        PS_INFO("write-ahead log %s (fsync %s): replayed %llu records (%llu skipped: in the "
                "snapshot); recovered in %lld ms",
                data_dir, fsync_mode, (unsigned long long)rec.replayed,
                (unsigned long long)rec.skipped, (long long)(ps_now_ms() - t0));
        if (rec.wal.cut_bytes)
            PS_WARN("write-ahead log: a torn tail of %llu bytes was cut from %s at offset %llu "
                    "(%s)",
                    (unsigned long long)rec.wal.cut_bytes, rec.wal.cut_file,
                    (unsigned long long)rec.wal.cut_offset,
                    strcmp(fsync_mode, "none") == 0
                        ? "--fsync none answers before the disk has a write: if the machine "
                          "itself went down, that write may have been acknowledged"
                        : "a write never acknowledged: answers wait for the disk");
    }
    if (st == PS_STATUS_OK)
        st = ps_runtime_create(&ro, &m.rt);
    if (st != PS_STATUS_OK) {
        PS_ERROR("cannot set up the shard: %s", ps_status_str(st));
        goto out;
    }
    rpc_method methods[SHARD_METHOD_COUNT];
    shard_ctx_methods(m.ctx, methods);
    rpc_server_opts so = {.listen = listen,
                          .threads = threads,
                          .grace_ms = 2000,
                          .max_streams = max_subs + SHARD_STREAM_MARGIN};
    if (ps_runtime_start(m.rt, &so, methods, SHARD_METHOD_COUNT, port_file, err, sizeof err) !=
        PS_STATUS_OK) {
        PS_ERROR("%s", err);
        goto out;
    }
    PS_INFO("serving on %s; coordinator %s; incarnation %016llx", ps_runtime_addr(m.rt),
            coordinator, (unsigned long long)shard_incarnation(m.ctx));
    ps_runtime_wait(m.rt);
    rc = 0;
out:
    if (m.ctx)
        shard_ctx_stop(m.ctx); /* Subscribe streams end before the server stops */
    ps_runtime_destroy(m.rt);
    shard_ctx_destroy(m.ctx);
    if (rc == 0)
        PS_INFO("stopped");
    return rc;
}
