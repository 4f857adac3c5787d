/* quota.h: the shard's value-memory quota (--max-bytes), shared by the chunk store and
 * the row store so that chunks, rows and optimizer state all count against one limit.
 *
 * Why it is built this way: the two stores have their own locks; a lock-free counter
 * lets each reserve bytes before it publishes and release them when it frees, without
 * taking the other's lock. A reservation either fits whole or changes nothing.
 */
#ifndef PS_SHARD_QUOTA_H
#define PS_SHARD_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef struct quota quota;

/* max_bytes 0 = no limit (bytes are still counted). */
ps_status quota_create(uint64_t max_bytes, quota **ret_quota);
void quota_destroy(quota *q); /* accepts NULL */

/* Adds `bytes` to the count when the result stays within the limit: true; otherwise
 * false and nothing changes. */
bool quota_reserve(quota *q, uint64_t bytes);
/* Takes `bytes` off the count (what an earlier reserve added). */
void quota_release(quota *q, uint64_t bytes);

uint64_t quota_used(const quota *q);
uint64_t quota_max(const quota *q); /* 0 = none */

#endif
