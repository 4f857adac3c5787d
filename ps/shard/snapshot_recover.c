/* snapshot_recover.c: a restart's recovery from a data directory (see snapshot.h): the
 * newest snapshot, then the log records after its LSN, refusing a log that does not
 * continue from the snapshot. */
#include <stdio.h>
#include <string.h>

#include "snapshot.h"
#include "util.h"

typedef struct recover_run {
    const snapshot_recover_opts *o;
    bool loaded;
    uint64_t lsn;   /* the snapshot's */
    bool seen;      /* a record was met */
    uint64_t first; /* the first record's LSN */
    uint64_t skipped, replayed, bytes;
    char why[512]; /* why a replay stopped, when this code stopped it */
} recover_run;

static ps_status replay(void *arg, uint8_t type, uint64_t lsn, const void *payload, size_t len) {
    recover_run *x = arg;
    if (!x->seen && x->loaded && lsn > x->lsn + 1) {
        snprintf(x->why, sizeof x->why,
                 "the write-ahead log starts at LSN %llu but the snapshot holds the records up "
                 "to %llu only: records %llu..%llu are missing",
                 (unsigned long long)lsn, (unsigned long long)x->lsn,
                 (unsigned long long)x->lsn + 1, (unsigned long long)lsn - 1);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (!x->seen)
        x->first = lsn;
    if (!x->seen && !x->loaded && lsn > 1) {
        snprintf(x->why, sizeof x->why,
                 "the write-ahead log starts at LSN %llu but no snapshot holds the records "
                 "before it (was a snap-*.snap file removed?)",
                 (unsigned long long)lsn);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    x->seen = true;
    if (x->loaded && lsn <= x->lsn) { /* the snapshot holds it */
        x->skipped++;
        return x->o->skipped ? x->o->skipped(x->o->skipped_arg, type, lsn, payload, len)
                             : PS_STATUS_OK;
    }
    x->replayed++;
    x->bytes += len;
    if (type == IMAGE_JOURNAL_TYPE) {
        ps_status st = image_journal_replay(&x->o->target, payload, len, x->why, sizeof x->why);
        return st;
    }
    return x->o->replay ? x->o->replay(x->o->replay_arg, type, lsn, payload, len) : PS_STATUS_OK;
}

ps_status snapshot_recover(const snapshot_recover_opts *o, snapshot_recovery *ret_rec,
                           wal **ret_wal, char *err, size_t err_len) {
    recover_run x = {.o = o};
    snapshot_recovery rec = {0};
    snapshot_info head = {0};
    ps_status st = snapshot_newest(o->wal.dir, &x.loaded, &head, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    if (x.loaded) {
        if ((st = snapshot_load(head.path, &o->target, o->requests, &rec.snap, err, err_len)) !=
            PS_STATUS_OK)
            return st;
        x.lsn = rec.snap.lsn;
    }
    wal_opts wo = o->wal;
    wo.replay = replay;
    wo.replay_arg = &x;
    if (x.loaded)
        wo.start_lsn = x.lsn + 1; /* a log whose every segment was lost continues after it */
    wal *w = NULL;
    st = wal_open(&wo, &rec.wal, &w, err, err_len);
    if (st != PS_STATUS_OK) {
        if (x.why[0])
            ps_set_err(err, err_len, "%s", x.why);
        return st;
    }
    if (x.loaded && rec.wal.last_lsn < x.lsn) {
        ps_set_err(err, err_len,
                   "the write-ahead log in %s ends at LSN %llu, before the LSN %llu that "
                   "snapshot %s holds: the log's newest segments are missing",
                   o->wal.dir, (unsigned long long)rec.wal.last_lsn, (unsigned long long)x.lsn,
                   rec.snap.path);
        wal_close(w);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (!x.loaded && ((x.seen && x.first > 1) || (!x.seen && rec.wal.last_lsn > 0))) {
        ps_set_err(err, err_len,
                   "the write-ahead log in %s starts after LSN %llu but no snapshot holds the "
                   "records before it (was a snap-*.snap file removed?)",
                   o->wal.dir, (unsigned long long)(x.seen ? x.first - 1 : rec.wal.last_lsn));
        wal_close(w);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    rec.loaded = x.loaded;
    rec.skipped = x.skipped;
    rec.replayed = x.replayed;
    rec.log_bytes = x.bytes;
    if (ret_rec)
        *ret_rec = rec;
    *ret_wal = w;
    return PS_STATUS_OK;
}
