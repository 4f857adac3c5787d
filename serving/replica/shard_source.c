/* shard_source.c: see shard_source.h. */
#include <stdlib.h>
#include <string.h>

#include "psclient.h"
#include "shard_source.h"
#include "util.h"

struct shard_source {
    char *coordinator;
    ps_client *client; /* created on first use */
};

ps_status shard_source_create(const shard_source_opts *opts, shard_source **ret_source) {
    if (!opts || !opts->coordinator)
        return PS_STATUS_INVALID_ARGUMENT;
    shard_source *src = calloc(1, sizeof *src);
    if (!src)
        return PS_STATUS_NO_MEMORY;
    src->coordinator = strdup(opts->coordinator);
    if (!src->coordinator) {
        free(src);
        return PS_STATUS_NO_MEMORY;
    }
    *ret_source = src;
    return PS_STATUS_OK;
}

void shard_source_destroy(shard_source *src) {
    if (!src)
        return;
    ps_client_destroy(src->client);
    free(src->coordinator);
    free(src);
}

static ps_status pull(void *arg, size_t n, const uint64_t *keys, float *const *dst,
                      const uint32_t *lens, uint64_t *ret_versions, char *err, size_t err_len) {
    shard_source *src = arg;
    if (!src->client) {
        ps_status st = ps_client_create(src->coordinator, &src->client, err, err_len);
        if (st != PS_STATUS_OK)
            return st;
        /* a replica has its own retries (sync); waiting long here would hold a load, or
         * a shutdown, for as long */
        ps_client_set_failover_wait(src->client, SERVE_FAILOVER_WAIT_MS);
    }
    ps_status st = ps_client_pull(src->client, n, keys, dst, lens, ret_versions);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "%s", ps_client_error(src->client));
        ps_client_refresh(src->client); /* the ring may have moved: route anew next time */
    }
    return st;
}

served_source shard_source_get(shard_source *src) {
    return (served_source){.pull = pull, .arg = src};
}
