/* rows_source.c: see rows_source.h. The pool is a stack of idle clients under a mutex,
 * with a count of those that exist; a read holds its client without the lock. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "psclient.h"
#include "rows_source.h"
#include "shard_source.h"
#include "util.h"

struct rows_source {
    char *coordinator;
    unsigned max_clients;
    pthread_mutex_t lock;
    pthread_cond_t idle_cond; /* a client went back idle, or may be made */
    ps_client **idle;         /* [max_clients] idle clients, the first n_idle used */
    unsigned n_idle;
    unsigned n_made; /* clients that exist, idle or in use (<= max_clients) */
};

ps_status rows_source_create(const rows_source_opts *opts, rows_source **ret_source) {
    if (!opts || !opts->coordinator || opts->max_clients > ROWS_SOURCE_MAX_CLIENTS)
        return PS_STATUS_INVALID_ARGUMENT;
    rows_source *src = calloc(1, sizeof *src);
    if (!src)
        return PS_STATUS_NO_MEMORY;
    src->max_clients = opts->max_clients ? opts->max_clients : ROWS_SOURCE_DEFAULT_CLIENTS;
    src->coordinator = strdup(opts->coordinator);
    src->idle = calloc(src->max_clients, sizeof *src->idle);
    if (!src->coordinator || !src->idle) {
        free(src->coordinator);
        free(src->idle);
        free(src);
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&src->lock, NULL);
    pthread_cond_init(&src->idle_cond, NULL);
    *ret_source = src;
    return PS_STATUS_OK;
}

void rows_source_destroy(rows_source *src) {
    if (!src)
        return;
    for (unsigned i = 0; i < src->n_idle; i++)
        ps_client_destroy(src->idle[i]);
    pthread_cond_destroy(&src->idle_cond);
    pthread_mutex_destroy(&src->lock);
    free(src->idle);
    free(src->coordinator);
    free(src);
}

/* An idle client, or the right to make one (*ret_client NULL): waits while every
 * client is in use. */
static void client_take(rows_source *src, ps_client **ret_client) {
    pthread_mutex_lock(&src->lock);
    while (src->n_idle == 0 && src->n_made == src->max_clients)
        pthread_cond_wait(&src->idle_cond, &src->lock);
    if (src->n_idle > 0) {
        *ret_client = src->idle[--src->n_idle];
    } else {
        *ret_client = NULL;
        src->n_made++; /* reserved: the caller makes it, or gives the slot back */
    }
    pthread_mutex_unlock(&src->lock);
}

/* Puts a client back (NULL: the slot taken by client_take is free again). */
static void client_give(rows_source *src, ps_client *c) {
    pthread_mutex_lock(&src->lock);
    if (c)
        src->idle[src->n_idle++] = c;
    else
        src->n_made--;
    pthread_cond_signal(&src->idle_cond);
    pthread_mutex_unlock(&src->lock);
}

/* What an inference answers for a failed read (see rows_source.h). */
static ps_status inference_status(ps_status st) {
    switch (st) {
    case PS_STATUS_UNAVAILABLE:
    case PS_STATUS_DEADLINE_EXCEEDED:
    case PS_STATUS_WRONG_EPOCH:
    case PS_STATUS_CANCELLED:
    case PS_STATUS_IO:
        return PS_STATUS_UNAVAILABLE;
    case PS_STATUS_RESOURCE_EXHAUSTED:
    case PS_STATUS_NO_MEMORY:
        return PS_STATUS_RESOURCE_EXHAUSTED;
    case PS_STATUS_FAILED_PRECONDITION:
        return st;
    default:
        return PS_STATUS_INTERNAL;
    }
}

ps_status rows_source_pull(rows_source *src, const char *model, const char *table,
                           const table_spec *spec, size_t n, const uint64_t *ids, float *out,
                           char *err, size_t err_len) {
    ps_client *c = NULL;
    client_take(src, &c);
    ps_status st = PS_STATUS_OK;
    if (!c) {
        char why[512] = "";
        st = ps_client_create(src->coordinator, &c, why, sizeof why);
        if (st == PS_STATUS_OK) /* an inference waits for a failover a short while only */
            ps_client_set_failover_wait(c, SERVE_FAILOVER_WAIT_MS);
        if (st != PS_STATUS_OK) {
            client_give(src, NULL);
            ps_set_err(err, err_len, "cannot reach the coordinator at %s to find the shards: %s",
                       src->coordinator, why);
            return inference_status(st);
        }
    }
    const ps_table_ref ref = {.model = model, .table = table, .spec = spec};
    st = ps_client_pull_rows(c, &ref, n, ids, out, NULL);
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len,
                   "cannot read rows of table %s of model %s from the shards (%s): %s", table,
                   model, ps_status_name(st), ps_client_error(c));
        if (ps_client_refresh(c) != PS_STATUS_OK) { /* the ring may have moved */
            ps_client_destroy(c);                   /* the coordinator is gone: start over */
            c = NULL;
        }
        st = inference_status(st);
    }
    client_give(src, c);
    return st;
}

static ps_status pull(void *arg, const char *model, const char *table, const table_spec *spec,
                      size_t n, const uint64_t *ids, float *out, char *err, size_t err_len) {
    return rows_source_pull(arg, model, table, spec, n, ids, out, err, err_len);
}

served_rows rows_source_get(rows_source *src) {
    return (served_rows){.pull = pull, .arg = src};
}
