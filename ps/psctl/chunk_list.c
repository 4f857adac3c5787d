/* chunk_list.c: see chunk_list.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_list.h"
#include "util.h"

/* One decimal index at *s (no sign, no spaces); advances *s. */
static bool read_index(const char **s, uint64_t *ret) {
    if (**s < '0' || **s > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(*s, &end, 10);
    if (errno)
        return false;
    *s = end;
    *ret = v;
    return true;
}

ps_status chunk_list_parse(const char *text, uint32_t n_chunks, uint8_t *ret_flags, char *err,
                           size_t err_len) {
    if (!text || !*text) {
        ps_set_err(err, err_len, "empty chunk list");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    uint8_t *flags = calloc(n_chunks + 1, 1);
    if (!flags) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    const char *s = text;
    ps_status st = PS_STATUS_OK;
    for (;;) {
        uint64_t lo = 0, hi = 0;
        const char *item = s;
        if (!read_index(&s, &lo)) {
            ps_set_err(err, err_len, "chunk list '%s': expected an index at '%s'", text, item);
            st = PS_STATUS_INVALID_ARGUMENT;
            break;
        }
        hi = lo;
        if (*s == '-') {
            s++;
            if (!read_index(&s, &hi)) {
                ps_set_err(err, err_len, "chunk list '%s': expected an index after '-'", text);
                st = PS_STATUS_INVALID_ARGUMENT;
                break;
            }
        }
        if (hi < lo) {
            ps_set_err(err, err_len, "chunk list '%s': range %llu-%llu runs backwards", text,
                       (unsigned long long)lo, (unsigned long long)hi);
            st = PS_STATUS_INVALID_ARGUMENT;
            break;
        }
        if (hi >= n_chunks) {
            ps_set_err(err, err_len, "chunk list '%s': chunk %llu is past the last chunk (%u)",
                       text, (unsigned long long)hi, n_chunks ? n_chunks - 1 : 0);
            st = PS_STATUS_INVALID_ARGUMENT;
            break;
        }
        memset(flags + lo, 1, (size_t)(hi - lo + 1));
        if (*s == '\0')
            break;
        if (*s != ',') {
            ps_set_err(err, err_len, "chunk list '%s': unexpected '%c'", text, *s);
            st = PS_STATUS_INVALID_ARGUMENT;
            break;
        }
        s++;
    }
    if (st == PS_STATUS_OK)
        memcpy(ret_flags, flags, n_chunks);
    free(flags);
    return st;
}

uint32_t chunk_list_format(const uint8_t *flags, uint32_t n_chunks, uint8_t want, char *buf,
                           size_t cap) {
    size_t off = 0;
    uint32_t count = 0;
    bool truncated = false;
    if (cap)
        buf[0] = '\0';
    for (uint32_t i = 0; i < n_chunks;) {
        if (flags[i] != want) {
            i++;
            continue;
        }
        uint32_t j = i;
        while (j + 1 < n_chunks && flags[j + 1] == want)
            j++;
        count += j - i + 1;
        char item[32];
        int len = i == j ? snprintf(item, sizeof item, "%s%u", off ? "," : "", i)
                         : snprintf(item, sizeof item, "%s%u-%u", off ? "," : "", i, j);
        if (!truncated && cap > 4 && off + (size_t)len + 4 < cap) {
            memcpy(buf + off, item, (size_t)len + 1);
            off += (size_t)len;
        } else if (!truncated && cap > 4) {
            memcpy(buf + off, "...", 4);
            off += 3;
            truncated = true;
        }
        i = j + 1;
    }
    return count;
}
