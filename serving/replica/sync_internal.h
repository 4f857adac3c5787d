/* sync_internal.h: what sync.c (the set of subscriptions, stall watch, re-pulls) and
 * sync_shard.c (one shard's subscriber thread) share. Not for other modules. Locks:
 * `lock` guards the subscriber list and the flags the waiters look at; `ring_lock` only
 * the placement ring (taken per key by the re-pull predicate, under a served model's
 * write lock); a subscriber's own `lock` only its stream pointer. Nothing calls into
 * the model set while holding any of them. */
#ifndef PS_SERVING_REPLICA_SYNC_INTERNAL_H
#define PS_SERVING_REPLICA_SYNC_INTERNAL_H

#include <stdatomic.h>

#include <pthread.h>

#include "hashring.h"
#include "rpc.h"
#include "sync.h"

typedef struct sub {
    sync_ctx *owner;
    char id[HASHRING_ID_MAX + 1];
    char addr[HASHRING_ADDR_MAX + 1];
    pthread_t thread;
    atomic_bool wanted;     /* still on the ring */
    atomic_bool done;       /* the thread has exited */
    atomic_bool settled;    /* subscribed, or found unreachable, at least once */
    atomic_bool subscribed; /* a stream is open */
    atomic_bool stalled;    /* the watchdog cancelled the stream */
    atomic_llong last_ms;   /* when the stream last carried something (monotonic) */
    pthread_mutex_t lock;   /* guards stream */
    rpc_stream *stream;
} sub;

struct sync_ctx {
    sync_opts o;
    atomic_bool stopping;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* wakes the fixer, sleeping subscribers and ready waiters */
    bool wake;           /* the fixer has work */
    bool have_ring;
    sub *subs[SYNC_MAX_SHARDS];
    size_t n_subs;
    pthread_mutex_t ring_lock;
    hashring *ring; /* placement, for re-pulls by shard */
    pthread_t thread;
};

/* True while the subscriber should keep going (not stopping, still on the ring). */
bool sync_sub_running(const sub *b);
/* Wakes sleepers and ready waiters; fix: also run the fixer now. */
void sync_wake(sync_ctx *s, bool fix);
/* Sleeps up to ms, less when woken or stopping. */
void sync_nap(sync_ctx *s, int ms);
/* True when the shard at addr is the primary owner of key (by the installed ring). */
bool sync_owned_by(sync_ctx *s, uint64_t key, const char *addr);

/* One shard's subscriber (sync_shard.c): start (lock held), stop, and free (after its
 * thread ended or will end: joins it). */
ps_status sync_sub_start(sync_ctx *s, const Ps__NodeInfo *node);
void sync_sub_stop(sub *b);
void sync_sub_free(sub *b);

#endif
