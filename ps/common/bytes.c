/* bytes.c: see bytes.h. */
#include "bytes.h"

#include <string.h>

ps_bytes_cursor ps_bytes_runs(const ps_bytes *pieces, size_t n_pieces, const uint8_t *data,
                              size_t len, ps_bytes *one) {
    *one = (ps_bytes){data, len};
    return n_pieces ? (ps_bytes_cursor){pieces, n_pieces, 0, 0} : (ps_bytes_cursor){one, 1, 0, 0};
}

size_t ps_bytes_next(ps_bytes_cursor *c, size_t max, const uint8_t **ret_data) {
    while (c->i < c->n && c->off == c->pieces[c->i].len) {
        c->i++;
        c->off = 0;
    }
    if (c->i == c->n || max == 0)
        return 0;
    const ps_bytes *p = &c->pieces[c->i];
    size_t take = p->len - c->off < max ? p->len - c->off : max;
    *ret_data = p->data + c->off;
    c->off += take;
    return take;
}

bool ps_bytes_take(ps_bytes_cursor *c, void *dst, size_t len) {
    uint8_t *out = dst;
    while (len > 0) {
        const uint8_t *p = NULL;
        size_t got = ps_bytes_next(c, len, &p);
        if (got == 0)
            return false;
        if (out) {
            memcpy(out, p, got);
            out += got;
        }
        len -= got;
    }
    return true;
}
