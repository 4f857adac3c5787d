/* push_subset.c: see push_subset.h. The values of consecutive chosen keys make one
 * range; each range is cut out of the push's pieces (gRPC's slices) as it lies. */
#include "push_subset.h"

#include <stdlib.h>
#include <string.h>

/* Slices the byte ranges of the keys at idx out of the push's values. */
static void slice_values(const store_push *p, const uint32_t *idx, size_t m, ps_bytes *out,
                         size_t *ret_n, size_t *ret_len) {
    ps_bytes whole = {p->values, p->values_len};
    const ps_bytes *src = p->n_pieces ? p->pieces : &whole;
    size_t n_src = p->n_pieces ? p->n_pieces : 1;
    size_t k = 0, cur = 0, total = 0, next = 0;
    uint64_t cur_start = 0, off = 0;
    for (size_t i = 0; i < p->n && next < m; i++) {
        uint64_t len = (uint64_t)p->lengths[i] * 4;
        if (idx[next] != i) {
            off += len;
            continue;
        }
        uint64_t a = off, b = off + len; /* with the following chosen keys while adjacent */
        next++;
        while (next < m && idx[next] == i + 1) {
            i++;
            b += (uint64_t)p->lengths[i] * 4;
            next++;
        }
        off = b;
        while (cur < n_src && cur_start + src[cur].len <= a) {
            cur_start += src[cur].len;
            cur++;
        }
        while (a < b && cur < n_src) {
            uint64_t end = cur_start + src[cur].len;
            uint64_t take = (b < end ? b : end) - a;
            out[k++] = (ps_bytes){src[cur].data + (a - cur_start), (size_t)take};
            total += take;
            a += take;
            if (a == end) {
                cur_start = end;
                cur++;
            }
        }
    }
    *ret_n = k;
    *ret_len = total;
}

ps_status push_subset_make(const store_push *p, const uint32_t *idx, size_t m, push_subset *ret) {
    push_subset s = {0};
    size_t n_src = p->n_pieces ? p->n_pieces : 1;
    s.keys = malloc(m * sizeof *s.keys + 1);
    s.lengths = malloc(m * sizeof *s.lengths + 1);
    s.names = p->names ? malloc(m * sizeof *s.names + 1) : NULL;
    s.pieces = calloc(m + n_src + 1, sizeof *s.pieces);
    s.slots = malloc(m * sizeof *s.slots + 1);
    if (!s.keys || !s.lengths || (p->names && !s.names) || !s.pieces || !s.slots) {
        push_subset_free(&s);
        return PS_STATUS_NO_MEMORY;
    }
    for (size_t j = 0; j < m; j++) {
        s.keys[j] = p->keys[idx[j]];
        s.lengths[j] = p->lengths[idx[j]];
        s.slots[j] = p->slots ? p->slots[idx[j]] : idx[j];
        if (s.names)
            s.names[j] = p->names[idx[j]];
    }
    size_t n_pieces = 0, len = 0;
    slice_values(p, idx, m, s.pieces, &n_pieces, &len);
    s.push = *p;
    s.push.n = m;
    s.push.keys = s.keys;
    s.push.lengths = s.lengths;
    s.push.names = s.names;
    s.push.slots = s.slots;
    s.push.values = NULL;
    s.push.pieces = s.pieces;
    s.push.n_pieces = n_pieces;
    s.push.values_len = len;
    *ret = s;
    return PS_STATUS_OK;
}

void push_subset_free(push_subset *s) {
    if (!s)
        return;
    free(s->keys);
    free(s->lengths);
    free(s->names);
    free(s->pieces);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

ps_status push_subset_skip(const store_push *p, const bool *skip, push_subset *ret) {
    uint32_t *idx = malloc(p->n * sizeof *idx + 1);
    if (!idx)
        return PS_STATUS_NO_MEMORY;
    size_t m = 0;
    for (size_t i = 0; i < p->n; i++)
        if (!skip[i])
            idx[m++] = (uint32_t)i;
    ps_status st = push_subset_make(p, idx, m, ret);
    free(idx);
    return st;
}

ps_status row_subset_make(const row_push *p, const bool *skip, row_subset *ret) {
    size_t row = (size_t)p->spec->dim * 4, m = 0;
    row_subset r = {0};
    r.ids = malloc(p->n * sizeof *r.ids + 1);
    r.values = malloc(p->n * row + 1);
    if (!r.ids || !r.values) {
        row_subset_free(&r);
        return PS_STATUS_NO_MEMORY;
    }
    ps_bytes one;
    ps_bytes_cursor cur = ps_bytes_runs(p->pieces, p->n_pieces, p->values, p->values_len, &one);
    for (size_t i = 0; i < p->n; i++) {
        if (skip[i]) {
            (void)ps_bytes_take(&cur, NULL, row);
            continue;
        }
        r.ids[m] = p->ids[i];
        (void)ps_bytes_take(&cur, r.values + m * row, row);
        m++;
    }
    r.push = *p;
    r.push.n = m;
    r.push.ids = r.ids;
    r.push.keys = NULL; /* computed again where needed, for these rows */
    r.push.values = r.values;
    r.push.pieces = NULL;
    r.push.n_pieces = 0;
    r.push.values_len = m * row;
    *ret = r;
    return PS_STATUS_OK;
}

void row_subset_free(row_subset *r) {
    if (!r)
        return;
    free(r->ids);
    free(r->values);
    memset(r, 0, sizeof *r);
}
