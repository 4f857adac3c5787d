/* wal_format.c: the write-ahead log's record encoding, checksums and segment names
 * (see wal_format.h for the layout). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "wal.h"
#include "wal_format.h"

/* ------------------------------------------------------------------ bytes --- */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------ records --- */

void wal_format_header_put(uint8_t *dst, uint8_t type, uint64_t lsn, uint32_t len) {
    put_u64(dst, 0);
    put_u32(dst + 8, WAL_RECORD_MAGIC);
    put_u32(dst + 12, len);
    put_u64(dst + 16, lsn);
    dst[24] = type;
    memset(dst + 25, 0, 7);
}

uint64_t wal_format_checksum(const uint8_t *rec, uint32_t len) {
    return XXH3_64bits(rec + 8, (size_t)WAL_RECORD_HEADER_BYTES - 8 + len);
}

void wal_format_checksum_put(uint8_t *rec) {
    put_u64(rec, wal_format_checksum(rec, get_u32(rec + 12)));
}

void wal_format_header_get(const uint8_t *src, wal_record_header *ret_header) {
    wal_record_header h = {
        .checksum = get_u64(src),
        .magic = get_u32(src + 8),
        .len = get_u32(src + 12),
        .lsn = get_u64(src + 16),
        .type = src[24],
        .reserved_zero = true,
    };
    for (int i = 25; i < 32; i++)
        if (src[i])
            h.reserved_zero = false;
    *ret_header = h;
}

uint32_t wal_format_len_get(const uint8_t *rec) {
    return get_u32(rec + 12);
}

uint64_t wal_format_lsn_get(const uint8_t *rec) {
    return get_u64(rec + 16);
}

const char *wal_format_record_check(const uint8_t *rec, uint64_t avail) {
    if (avail < WAL_RECORD_HEADER_BYTES)
        return "short header";
    wal_record_header h;
    wal_format_header_get(rec, &h);
    if (h.magic != WAL_RECORD_MAGIC)
        return "bad magic";
    if (!h.reserved_zero)
        return "nonzero reserved bytes";
    if (h.len > WAL_MAX_PAYLOAD_BYTES)
        return "length over WAL_MAX_PAYLOAD_BYTES";
    if (avail - WAL_RECORD_HEADER_BYTES < h.len)
        return "short payload";
    if (wal_format_checksum(rec, h.len) != h.checksum)
        return "bad checksum";
    return NULL;
}

/* ------------------------------------------------------------------ segments --- */

void wal_format_segment_name(uint64_t first_lsn, char *name) {
    snprintf(name, WAL_SEGMENT_NAME_LEN + 1, "wal-%020llu.log", (unsigned long long)first_lsn);
}

bool wal_format_segment_parse(const char *name, uint64_t *ret_lsn) {
    if (strlen(name) != WAL_SEGMENT_NAME_LEN || strncmp(name, "wal-", 4) != 0 ||
        strcmp(name + 24, ".log") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 4; i < 24; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        uint64_t d = (uint64_t)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *ret_lsn = v;
    return true;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

ps_status wal_format_segments_list(const char *dir, uint64_t **ret_lsns, size_t *ret_count) {
    ps_status st = PS_STATUS_OK;
    uint64_t *lsns = NULL;
    size_t n = 0, cap = 0;
    DIR *d = opendir(dir);
    if (!d)
        return PS_STATUS_IO;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno)
                st = PS_STATUS_IO;
            break;
        }
        uint64_t lsn;
        if (!wal_format_segment_parse(e->d_name, &lsn))
            continue;
        if (n == WAL_MAX_SEGMENTS) {
            st = PS_STATUS_RESOURCE_EXHAUSTED;
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(lsns, ncap * sizeof *grown);
            if (!grown) {
                st = PS_STATUS_NO_MEMORY;
                break;
            }
            lsns = grown;
            cap = ncap;
        }
        lsns[n++] = lsn;
    }
    closedir(d);
    if (st != PS_STATUS_OK) {
        free(lsns);
        return st;
    }
    if (n > 1)
        qsort(lsns, n, sizeof *lsns, cmp_u64);
    *ret_lsns = lsns;
    *ret_count = n;
    return PS_STATUS_OK;
}

/* write() or, with off >= 0, pwrite() at off, of all of it. */
static int write_loop(int fd, const void *data, size_t len, int64_t off) {
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO; /* a regular file never accepts nothing; do not spin */
        p += n;
        len -= (size_t)n;
        if (off >= 0)
            off += n;
    }
    return 0;
}

int wal_format_write_all(int fd, const void *data, size_t len) {
    return write_loop(fd, data, len, -1);
}

int wal_format_pwrite_all(int fd, const void *data, size_t len, uint64_t off) {
    return write_loop(fd, data, len, (int64_t)off);
}
