/* wal_recover.c: the write-ahead log's recovery (the rules are in wal.h): check every
 * segment, then replay the good records in LSN order, then cut a torn tail off the
 * last segment. Checking everything before replaying anything means a refused log
 * leaves the caller's state untouched, and a failed replay leaves the files untouched. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"
#include "wal_internal.h"

/* A segment mapped read-only. */
typedef struct seg_map {
    char name[WAL_SEGMENT_NAME_LEN + 1];
    const uint8_t *data; /* NULL when empty */
    uint64_t size;
} seg_map;

static ps_status seg_map_open(const char *dir, int dir_fd, uint64_t first_lsn, seg_map *m,
                              char *err, size_t err_len) {
    memset(m, 0, sizeof *m);
    wal_format_segment_name(first_lsn, m->name);
    int fd = openat(dir_fd, m->name, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        ps_set_err(err, err_len, "wal: cannot read %s/%s: %s", dir, m->name, strerror(errno));
        if (fd >= 0)
            close(fd);
        return PS_STATUS_IO;
    }
    m->size = (uint64_t)sb.st_size;
    if (m->size > 0) {
        void *p = mmap(NULL, (size_t)m->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            ps_set_err(err, err_len, "wal: cannot map %s/%s: %s", dir, m->name, strerror(errno));
            close(fd);
            return PS_STATUS_IO;
        }
        m->data = p;
    }
    close(fd);
    return PS_STATUS_OK;
}

static void seg_map_close(seg_map *m) {
    if (m->data)
        munmap((void *)m->data, (size_t)m->size);
    m->data = NULL;
}

/* The offset of the first good record (any LSN) starting after `from`, or size. */
static uint64_t find_good_record(const seg_map *m, uint64_t from) {
    for (uint64_t p = from + 1; p + WAL_RECORD_HEADER_BYTES <= m->size; p++) {
        if (m->data[p + 8] != 'P' || m->data[p + 9] != 'S') /* cheap magic pre-check */
            continue;
        if (!wal_format_record_check(m->data + p, m->size - p))
            return p;
    }
    return m->size;
}

/* Whether data[from..size) is all zeros: the padding a direct write leaves after the
 * last record (wal_segment.c), not a torn record. */
static bool zeros_from(const seg_map *m, uint64_t from) {
    for (uint64_t p = from; p < m->size; p++)
        if (m->data[p])
            return false;
    return true;
}

/* Pass 1 over one segment: its good bytes (ret_good) and its last LSN (*lsn advances
 * over its records). PARSE for corruption; a torn tail is only allowed when `last`;
 * zeros after the last record, padding, in any segment when shorter than a direct
 * write's block (*ret_padding: they are). */
static ps_status seg_check(const char *dir, const seg_map *m, bool last, uint64_t *lsn,
                           uint64_t *ret_good, bool *ret_padding, char *err, size_t err_len) {
    uint64_t off = 0;
    *ret_padding = false;
    while (off < m->size) {
        const uint8_t *rec = m->data + off;
        const char *why = wal_format_record_check(rec, m->size - off);
        if (!why && wal_format_lsn_get(rec) != *lsn + 1) {
            ps_set_err(err, err_len,
                       "wal: %s/%s offset %llu: a good record with LSN %llu where LSN %llu was "
                       "expected",
                       dir, m->name, (unsigned long long)off,
                       (unsigned long long)wal_format_lsn_get(rec), (unsigned long long)(*lsn + 1));
            return PS_STATUS_PARSE;
        }
        if (why && zeros_from(m, off) && (last || m->size - off < WAL_DIRECT_ALIGN)) {
            *ret_padding = true;
            break;
        }
        if (why) {
            if (!last) {
                ps_set_err(err, err_len,
                           "wal: %s/%s offset %llu: corrupt record (%s) in a segment that is not "
                           "the last",
                           dir, m->name, (unsigned long long)off, why);
                return PS_STATUS_PARSE;
            }
            uint64_t next = find_good_record(m, off);
            if (next < m->size) {
                ps_set_err(err, err_len,
                           "wal: %s/%s offset %llu: corrupt record (%s) followed by a good "
                           "record at offset %llu",
                           dir, m->name, (unsigned long long)off, why, (unsigned long long)next);
                return PS_STATUS_PARSE;
            }
            break; /* a torn tail */
        }
        off += WAL_RECORD_HEADER_BYTES + (uint64_t)wal_format_len_get(rec);
        ++*lsn;
    }
    *ret_good = off;
    return PS_STATUS_OK;
}

/* Pass 2 over one segment's good bytes: the replay calls. */
static ps_status seg_replay(const wal_opts *o, const seg_map *m, uint64_t good, wal_recovery *rec,
                            char *err, size_t err_len) {
    for (uint64_t off = 0; off < good;) {
        wal_record_header h;
        wal_format_header_get(m->data + off, &h);
        ps_status st =
            o->replay(o->replay_arg, h.type, h.lsn, m->data + off + WAL_RECORD_HEADER_BYTES, h.len);
        if (st != PS_STATUS_OK) {
            ps_set_err(err, err_len, "wal: replay of LSN %llu (%s offset %llu) failed: %s",
                       (unsigned long long)h.lsn, m->name, (unsigned long long)off,
                       ps_status_str(st));
            return st;
        }
        if (rec->records++ == 0)
            rec->first_lsn = h.lsn;
        off += WAL_RECORD_HEADER_BYTES + h.len;
    }
    return PS_STATUS_OK;
}

/* Truncates the last segment to its good bytes, durably. */
static ps_status seg_cut(const char *dir, int dir_fd, const char *name, uint64_t good, char *err,
                         size_t err_len) {
    int fd = openat(dir_fd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)good) != 0 || fsync(fd) != 0) {
        ps_set_err(err, err_len, "wal: cannot cut the torn tail of %s/%s at offset %llu: %s", dir,
                   name, (unsigned long long)good, strerror(errno));
        if (fd >= 0)
            close(fd);
        return PS_STATUS_IO;
    }
    close(fd);
    return PS_STATUS_OK;
}

ps_status wal_recover(const wal_opts *o, int dir_fd, wal_recovery *ret_rec,
                      wal_recover_result *ret_res, char *err, size_t err_len) {
    uint64_t *firsts = NULL, *good = NULL;
    size_t n = 0;
    bool pad_cut = false;
    ps_status st = wal_format_segments_list(o->dir, &firsts, &n);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "wal: cannot list %s: %s", o->dir, ps_status_str(st));
        return st;
    }
    wal_recovery rec = {.segments = (uint32_t)n};
    wal_recover_result res = {.last_lsn = o->start_lsn - 1};
    if (n == 0)
        goto done;
    good = calloc(n, sizeof *good);
    if (!good) {
        ps_set_err(err, err_len, "wal: out of memory");
        st = PS_STATUS_NO_MEMORY;
        goto fail;
    }

    if (firsts[0] == 0) {
        ps_set_err(err, err_len, "wal: %s holds a segment named for LSN 0 (LSNs start at 1)",
                   o->dir);
        st = PS_STATUS_PARSE;
        goto fail;
    }

    /* pass 1: check everything */
    uint64_t lsn = firsts[0] - 1;
    for (size_t i = 0; i < n; i++) {
        if (firsts[i] != lsn + 1) {
            char name[WAL_SEGMENT_NAME_LEN + 1];
            wal_format_segment_name(firsts[i], name);
            ps_set_err(err, err_len,
                       "wal: %s/%s starts at LSN %llu but the segment before ends at LSN %llu: "
                       "records are missing",
                       o->dir, name, (unsigned long long)firsts[i], (unsigned long long)lsn);
            st = PS_STATUS_PARSE;
            goto fail;
        }
        seg_map m;
        st = seg_map_open(o->dir, dir_fd, firsts[i], &m, err, err_len);
        if (st != PS_STATUS_OK)
            goto fail;
        bool padding = false;
        st = seg_check(o->dir, &m, i + 1 == n, &lsn, &good[i], &padding, err, err_len);
        if (i + 1 == n && st == PS_STATUS_OK && good[i] < m.size) { /* cut: said unless zeros */
            pad_cut = padding;
            rec.cut_bytes = padding ? 0 : m.size - good[i];
            rec.cut_offset = good[i];
            snprintf(rec.cut_file, sizeof rec.cut_file, "%s", m.name);
        }
        seg_map_close(&m);
        if (st != PS_STATUS_OK)
            goto fail;
    }
    res.last_lsn = lsn;
    res.have_segment = true;
    res.seg_first_lsn = firsts[n - 1];
    res.seg_bytes = good[n - 1];

    /* pass 2: replay */
    for (size_t i = 0; o->replay && i < n; i++) {
        seg_map m;
        st = seg_map_open(o->dir, dir_fd, firsts[i], &m, err, err_len);
        if (st != PS_STATUS_OK)
            goto fail;
        st = seg_replay(o, &m, good[i], &rec, err, err_len);
        seg_map_close(&m);
        if (st != PS_STATUS_OK)
            goto fail;
    }
    if (!o->replay && lsn >= firsts[0]) { /* checked, not replayed: still say what is there */
        rec.records = lsn - firsts[0] + 1;
        rec.first_lsn = firsts[0];
    }

    /* then cut (padding silently: it held no record) */
    if (rec.cut_bytes > 0 || pad_cut) {
        st = seg_cut(o->dir, dir_fd, rec.cut_file, rec.cut_offset, err, err_len);
        if (st != PS_STATUS_OK)
            goto fail;
    }
done:
    rec.last_lsn = res.last_lsn;
    *ret_rec = rec;
    *ret_res = res;
fail:
    free(good);
    free(firsts);
    return st;
}
