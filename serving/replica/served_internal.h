/* served_internal.h: the served model's fields, shared by served.c (building, updates,
 * pulls) and served_infer.c (forward passes, output checks, statistics). Not for other
 * modules: they see served.h. */
#ifndef PS_SERVING_REPLICA_SERVED_INTERNAL_H
#define PS_SERVING_REPLICA_SERVED_INTERNAL_H

#include <stdatomic.h>

#include <pthread.h>

#include "chunk_table.h"
#include "served.h"
#include "train_config.h"
#include "wordpiece.h"

struct served {
    atomic_int refs;
    char *name;
    uint64_t version;
    model *m;
    wordpiece *tokenizer;  /* the config's text input's (NULL: none); immutable */
    pthread_rwlock_t lock; /* infer: read; updates and pulls: write */
    float **params;        /* per registry tensor: the instance's buffer (NULL: unused) */
    const char **pnames;   /* per registry tensor: its parameter name in the instance */
    atomic_bool unsynced;  /* the last model_params_sync failed: passes retry it first */
    chunk_table *chunks;   /* under lock */
    uint64_t param_version;
    train_config *training; /* the config's training half: table specs (tables only) */
    served_rows rows;       /* where table rows come from (tables only) */
    bool frozen;            /* consistent propagation: never changed after its pull */
    uint64_t publish;       /* the published cut it holds (consistent propagation; else 0) */
    atomic_bool ready;
    atomic_bool nonfinite;               /* the last pass produced a non-finite output */
    atomic_bool nonfinite_logged;        /* the current streak's start was logged */
    _Atomic int64_t nonfinite_logged_ms; /* when a streak start was last logged */

    pthread_mutex_t stats_lock;
    served_stats stats;

    pthread_mutex_t ws_lock; /* idle forward-pass workspaces */
    model_workspace *idle_ws[SERVED_MAX_IDLE_WORKSPACES];
    size_t n_idle_ws;
};

/* Marks the instance's memory of chunk e written (model_param_mark); under the write
 * lock. */
void served_chunk_written(served *s, const chunk_table_entry *e);
/* Uploads what was marked (model_params_sync) and records whether it failed
 * (unsynced); under the write lock. */
ps_status served_params_sync(served *s, char *err, size_t err_len);

#endif
