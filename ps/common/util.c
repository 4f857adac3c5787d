/* util.c: see util.h. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* inlined: the row keys (8 bytes, seeded) are hashed per row on the hot path, where the
 * library's general call cost 3-4% of a sparse push's time on each side */
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "util.h"

int64_t ps_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ps_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t ps_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec ps_abstime_after_ms(int64_t ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (long long)ms * 1000000LL;
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return ts;
}

uint64_t ps_key_dense(const char *model, uint64_t version, const char *tensor, uint32_t chunk) {
    XXH3_state_t st; /* streaming, so names of any length hash without a copy */
    uint8_t idx[4] = {(uint8_t)chunk, (uint8_t)(chunk >> 8), (uint8_t)(chunk >> 16),
                      (uint8_t)(chunk >> 24)};
    uint8_t ver[8];
    for (int i = 0; i < 8; i++)
        ver[i] = (uint8_t)(version >> (8 * i));
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, model, strlen(model) + 1);
    XXH3_64bits_update(&st, ver, sizeof ver);
    XXH3_64bits_update(&st, tensor, strlen(tensor) + 1);
    XXH3_64bits_update(&st, idx, sizeof idx);
    return XXH3_64bits_digest(&st);
}

uint64_t ps_key_table(const char *model, const char *table) {
    XXH3_state_t st;
    XXH3_INITSTATE(&st);
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, model, strlen(model) + 1);
    XXH3_64bits_update(&st, table, strlen(table) + 1);
    return XXH3_64bits_digest(&st);
}

uint64_t ps_key_row_in(uint64_t table_key, uint64_t id) {
    uint8_t idb[8];
    for (int i = 0; i < 8; i++)
        idb[i] = (uint8_t)(id >> (8 * i));
    return XXH3_64bits_withSeed(idb, sizeof idb, table_key);
}

void ps_keys_rows(uint64_t table_key, size_t n, const uint64_t *ids, uint64_t *ret_keys) {
    for (size_t i = 0; i < n; i++)
        ret_keys[i] = ps_key_row_in(table_key, ids[i]);
}

uint64_t ps_key_row(const char *model, const char *table, uint64_t id) {
    return ps_key_row_in(ps_key_table(model, table), id);
}

bool ps_reserve(void **arr, size_t *cap, size_t need, size_t elem, size_t first) {
    if (need <= *cap)
        return true;
    size_t want = *cap ? *cap : first;
    while (want < need)
        want *= 2;
    void *grown = realloc(*arr, want * elem);
    if (!grown)
        return false;
    *arr = grown;
    *cap = want;
    return true;
}

bool ps_parse_u64(const char *s, uint64_t *ret) {
    if (!s || *s < '0' || *s > '9') /* digits only: no sign, no spaces (strtoull allows them) */
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *ret = v;
    return true;
}

bool ps_parse_u64_range(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
    uint64_t v;
    if (!ps_parse_u64(s, &v) || v < min || v > max)
        return false;
    *ret = v;
    return true;
}

bool ps_parse_int(const char *s, int min, int max, int *ret) {
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *ret = (int)v;
    return true;
}

/* fsyncs the directory holding path ("." when it names none). */
static ps_status fsync_parent(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir)
        return PS_STATUS_INVALID_ARGUMENT;
    if (slash && n == 0)
        n = 1; /* "/file": the root */
    memcpy(dir, slash ? path : ".", slash ? n : 1);
    dir[slash ? n : 1] = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return PS_STATUS_IO;
    ps_status st = fsync(fd) == 0 ? PS_STATUS_OK : PS_STATUS_IO;
    close(fd);
    return st;
}

ps_status ps_write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return PS_STATUS_INVALID_ARGUMENT;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return PS_STATUS_IO;
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            goto fail_close;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0)
        goto fail_close;
    close(fd);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return PS_STATUS_IO;
    }
    return fsync_parent(path); /* the rename itself must survive a crash */
fail_close:
    close(fd);
    unlink(tmp);
    return PS_STATUS_IO;
}

ps_status ps_read_file(const char *path, char **ret_data, size_t *ret_len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? PS_STATUS_NOT_FOUND : PS_STATUS_IO;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return PS_STATUS_NO_MEMORY;
    }
    size_t n;
    while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                fclose(f);
                return PS_STATUS_NO_MEMORY;
            }
            buf = grown;
            cap *= 2;
        }
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return PS_STATUS_IO;
    }
    buf[len] = '\0';
    *ret_data = buf;
    if (ret_len)
        *ret_len = len;
    return PS_STATUS_OK;
}

ps_status ps_mkdir_p(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return PS_STATUS_INVALID_ARGUMENT;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return PS_STATUS_IO;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return PS_STATUS_IO;
    return PS_STATUS_OK;
}

bool ps_text_valid(const char *s, size_t len) {
    const uint8_t *p = (const uint8_t *)s, *end = p + len;
    while (p < end) {
        const uint8_t b = *p;
        if (b < 0x80) { /* ASCII: no control characters */
            if (b < 0x20 || b == 0x7f)
                return false;
            p++;
            continue;
        }
        /* the length of the sequence, and the range its second byte must be in */
        size_t n;
        uint8_t lo = 0x80, hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf) {
            n = 2;
        } else if (b >= 0xe0 && b <= 0xef) {
            n = 3;
            lo = b == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
            hi = b == 0xed ? 0x9f : 0xbf; /* no surrogates */
        } else if (b >= 0xf0 && b <= 0xf4) {
            n = 4;
            lo = b == 0xf0 ? 0x90 : 0x80; /* no overlong forms */
            hi = b == 0xf4 ? 0x8f : 0xbf; /* nothing past U+10FFFF */
        } else {
            return false; /* a continuation byte, an overlong lead (c0, c1) or f5..ff */
        }
        if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
            return false;
        for (size_t k = 2; k < n; k++)
            if (p[k] < 0x80 || p[k] > 0xbf)
                return false;
        if (n == 2 && b == 0xc2 && p[1] < 0xa0) /* U+0080..U+009F: C1 controls */
            return false;
        p += n;
    }
    return true;
}

void ps_set_err(char *err, size_t err_len, const char *fmt, ...) {
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
