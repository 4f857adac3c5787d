/* repl_inbox.c: the replication streams a backup receives (see repl_inbox.h). A small
 * array searched by id (a shard has a handful of primaries sending to it), allocated
 * once at its bound (about 100 KiB) so that a begun stream never moves. */
#include "repl_inbox.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hashring.h"
#include "util.h"

struct repl_stream {
    char from[HASHRING_ID_MAX + 1];
    uint64_t incarnation;
    uint64_t applied;
    uint64_t last_used;                   /* inbox tick of its last use */
    uint64_t sync_num;                    /* the newest sync begun on it */
    uint64_t retired[REPL_INBOX_RETIRED]; /* the primary's incarnations before, newest first */
    bool busy;
};

struct repl_inbox {
    pthread_mutex_t lock;
    pthread_cond_t idle;
    repl_stream *streams;
    size_t n, cap;
    uint64_t tick;
};

ps_status repl_inbox_create(repl_inbox **ret) {
    repl_inbox *in = calloc(1, sizeof *in);
    if (!in)
        return PS_STATUS_NO_MEMORY;
    in->cap = REPL_INBOX_MAX_PEERS; /* fixed: callers hold pointers into it */
    in->streams = calloc(in->cap, sizeof *in->streams);
    if (!in->streams || pthread_mutex_init(&in->lock, NULL) != 0) {
        free(in->streams);
        free(in);
        return PS_STATUS_NO_MEMORY;
    }
    if (pthread_cond_init(&in->idle, NULL) != 0) {
        pthread_mutex_destroy(&in->lock);
        free(in->streams);
        free(in);
        return PS_STATUS_NO_MEMORY;
    }
    *ret = in;
    return PS_STATUS_OK;
}

void repl_inbox_destroy(repl_inbox *in) {
    if (!in)
        return;
    pthread_cond_destroy(&in->idle);
    pthread_mutex_destroy(&in->lock);
    free(in->streams);
    free(in);
}

/* The stream of `from`, a new slot, or the idle one used longest ago (lock held). */
static repl_stream *slot_locked(repl_inbox *in, const char *from, ps_status *ret_st) {
    for (size_t i = 0; i < in->n; i++)
        if (strcmp(in->streams[i].from, from) == 0)
            return &in->streams[i];
    repl_stream *s = NULL;
    if (in->n < in->cap) {
        s = &in->streams[in->n++];
    } else {
        for (size_t i = 0; i < in->n; i++)
            if (!in->streams[i].busy && (!s || in->streams[i].last_used < s->last_used))
                s = &in->streams[i];
        if (!s) {
            *ret_st = PS_STATUS_RESOURCE_EXHAUSTED;
            return NULL;
        }
    }
    memset(s, 0, sizeof *s);
    snprintf(s->from, sizeof s->from, "%s", from);
    return s;
}

/* One of the stream's earlier incarnations (lock held). */
static bool retired_locked(const repl_stream *s, uint64_t incarnation) {
    for (uint32_t i = 0; i < REPL_INBOX_RETIRED; i++)
        if (s->retired[i] && s->retired[i] == incarnation)
            return true;
    return false;
}

ps_status repl_inbox_begin(repl_inbox *in, const char *from, uint64_t incarnation,
                           repl_stream **ret_stream, uint64_t *ret_applied) {
    return repl_inbox_begin_at(in, from, incarnation, 0, 0, ret_stream, ret_applied);
}

ps_status repl_inbox_begin_at(repl_inbox *in, const char *from, uint64_t incarnation,
                              uint64_t first, int64_t deadline_ms, repl_stream **ret_stream,
                              uint64_t *ret_applied) {
    if (!from || !from[0] || strlen(from) > HASHRING_ID_MAX)
        return PS_STATUS_INVALID_ARGUMENT;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&in->lock);
    repl_stream *s;
    for (;;) {
        s = slot_locked(in, from, &st);
        if (!s)
            break;
        if (s->busy) { /* another call applies this stream */
            pthread_cond_wait(&in->idle, &in->lock);
            continue;
        }
        if (s->incarnation != incarnation) { /* a restarted primary: a new stream */
            if (retired_locked(s, incarnation)) {
                pthread_mutex_unlock(&in->lock);
                return PS_STATUS_FAILED_PRECONDITION;
            }
            if (s->incarnation) { /* remembered: its calls still on their way are refused */
                memmove(&s->retired[1], &s->retired[0],
                        (REPL_INBOX_RETIRED - 1) * sizeof s->retired[0]);
                s->retired[0] = s->incarnation;
            }
            s->incarnation = incarnation;
            s->applied = 0;
            s->sync_num = 0;
        }
        if (first <= 1 || s->applied >= first - 1)
            break;
        int64_t left = deadline_ms - ps_now_ms(); /* a batch before this one is due */
        if (left <= 0) {
            *ret_applied = s->applied;
            pthread_mutex_unlock(&in->lock);
            return PS_STATUS_UNAVAILABLE;
        }
        struct timespec ts = ps_abstime_after_ms(left);
        pthread_cond_timedwait(&in->idle, &in->lock, &ts);
    }
    if (s) {
        s->busy = true;
        s->last_used = ++in->tick;
        *ret_stream = s;
        *ret_applied = s->applied;
    }
    pthread_mutex_unlock(&in->lock);
    return st;
}

bool repl_inbox_sync_newest(repl_stream *s, uint64_t num) {
    if (num && num < s->sync_num) /* the stream's lock (busy) is the caller's */
        return false;
    if (num)
        s->sync_num = num;
    return true;
}

void repl_inbox_end(repl_inbox *in, repl_stream *s, uint64_t applied, bool reset) {
    pthread_mutex_lock(&in->lock);
    if (applied > s->applied || reset)
        s->applied = applied;
    s->busy = false;
    pthread_cond_broadcast(&in->idle);
    pthread_mutex_unlock(&in->lock);
}
