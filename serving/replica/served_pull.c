/* served_pull.c: filling a served model from the shards (served_pull; see served.h):
 * the chunks asked for are pulled in batches outside the lock, then installed under the
 * write lock where newer than held, marked, and synced to the device before the lock is
 * let go (model.h, "Memory"). */
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "served_internal.h"
#include "util.h"

/* Pulls the chunks idx[0..n) in batches and installs what is newer than held. */
static ps_status pull_chunks(served *s, const served_source *src, const size_t *idx, size_t n,
                             uint64_t generation, char *err, size_t err_len) {
    size_t cap_floats = SERVED_PULL_BATCH_FLOATS;
    float *buf = malloc(cap_floats * 4);
    uint64_t *keys = malloc((n + 1) * sizeof *keys), *versions = malloc((n + 1) * sizeof *versions);
    float **dst = malloc((n + 1) * sizeof *dst);
    uint32_t *lens = malloc((n + 1) * sizeof *lens);
    ps_status st = PS_STATUS_OK;
    if (!buf || !keys || !versions || !dst || !lens) {
        ps_set_err(err, err_len, "out of memory");
        st = PS_STATUS_NO_MEMORY;
        goto out;
    }
    for (size_t first = 0; first < n;) {
        size_t m = 0, used = 0;
        while (first + m < n) { /* the table's layout never changes: no lock needed */
            const chunk_table_entry *e = chunk_table_at(s->chunks, idx[first + m]);
            if (m > 0 && used + e->len > cap_floats)
                break;
            if (e->len > cap_floats) { /* one chunk bigger than the batch buffer */
                float *grown = realloc(buf, e->len * 4ull);
                if (!grown) {
                    ps_set_err(err, err_len, "out of memory");
                    st = PS_STATUS_NO_MEMORY;
                    goto out;
                }
                buf = grown;
                cap_floats = e->len;
            }
            keys[m] = e->key;
            lens[m] = e->len;
            dst[m] = buf + used;
            used += e->len;
            m++;
        }
        st = src->pull(src->arg, m, keys, dst, lens, versions, err, err_len);
        if (st != PS_STATUS_OK)
            goto out;
        pthread_rwlock_wrlock(&s->lock);
        for (size_t i = 0; i < m; i++) {
            size_t c = idx[first + i];
            const chunk_table_entry *e = chunk_table_at(s->chunks, c);
            if (chunk_table_set_pulled(s->chunks, c, versions[i], generation)) {
                memcpy(s->params[e->param] + e->offset, dst[i], e->len * 4ull);
                served_chunk_written(s, e);
            }
        }
        st = served_params_sync(s, err, err_len);
        s->param_version = chunk_table_version_sum(s->chunks);
        pthread_rwlock_unlock(&s->lock);
        if (st != PS_STATUS_OK)
            goto out;
        first += m;
    }
out:
    free(buf);
    free(keys);
    free(versions);
    free(dst);
    free(lens);
    return st;
}

ps_status served_pull(served *s, const served_source *src, bool all, size_t *ret_left, char *err,
                      size_t err_len) {
    pthread_rwlock_rdlock(&s->lock);
    size_t total = chunk_table_count(s->chunks);
    size_t want = all ? total : chunk_table_stale_count(s->chunks);
    size_t *idx = malloc((want + 1) * sizeof *idx);
    size_t n = 0;
    uint64_t generation = chunk_table_generation(s->chunks);
    if (idx && all)
        for (n = 0; n < total; n++)
            idx[n] = n;
    else if (idx)
        n = chunk_table_stale_list(s->chunks, idx, want);
    pthread_rwlock_unlock(&s->lock);
    if (!idx) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st = n ? pull_chunks(s, src, idx, n, generation, err, err_len) : PS_STATUS_OK;
    free(idx);
    if (st == PS_STATUS_OK && ret_left) {
        pthread_rwlock_rdlock(&s->lock);
        size_t left = chunk_table_stale_count(s->chunks);
        if (left == 0 && !chunk_table_filled(s->chunks))
            left = 1;
        pthread_rwlock_unlock(&s->lock);
        *ret_left = left;
    }
    return st;
}
