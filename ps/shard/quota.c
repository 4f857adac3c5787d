/* quota.c: the shard's value-memory quota, an atomic counter (see quota.h). */
#include "quota.h"

#include <stdatomic.h>
#include <stdlib.h>

struct quota {
    _Atomic uint64_t used;
    uint64_t max;
};

ps_status quota_create(uint64_t max_bytes, quota **ret_quota) {
    quota *q = calloc(1, sizeof *q);
    if (!q)
        return PS_STATUS_NO_MEMORY;
    atomic_init(&q->used, 0);
    q->max = max_bytes;
    *ret_quota = q;
    return PS_STATUS_OK;
}

void quota_destroy(quota *q) {
    free(q);
}

bool quota_reserve(quota *q, uint64_t bytes) {
    uint64_t cur = atomic_load(&q->used);
    for (;;) {
        if (bytes > UINT64_MAX - cur || (q->max && cur + bytes > q->max))
            return false;
        if (atomic_compare_exchange_weak(&q->used, &cur, cur + bytes))
            return true;
    }
}

void quota_release(quota *q, uint64_t bytes) {
    atomic_fetch_sub(&q->used, bytes);
}

uint64_t quota_used(const quota *q) {
    return atomic_load(&((quota *)q)->used);
}

uint64_t quota_max(const quota *q) {
    return q->max;
}
