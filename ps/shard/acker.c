/* acker.c: see acker.h. A FIFO of deferred calls under one mutex, and one thread. */
#include "acker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct ack_item {
    rpc_ctx *rc;
    uint64_t pos;
    bool fresh;
    const char *what;
    struct ack_item *next;
} ack_item;

struct acker {
    acker_wait_fn wait;
    void *arg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ack_item *head, *tail;
    bool stopping;
    pthread_t thread;
};

static void *acker_main(void *arg) {
    acker *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->head && !a->stopping)
            pthread_cond_wait(&a->cond, &a->lock);
        ack_item *it = a->head;
        if (!it)
            break; /* stopping and nothing left */
        a->head = it->next;
        if (!a->head)
            a->tail = NULL;
        pthread_mutex_unlock(&a->lock);
        ps_status st = a->wait(a->arg, it->rc, it->pos, it->fresh, it->what);
        rpc_ctx_complete(it->rc, st);
        free(it);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

ps_status acker_create(acker_wait_fn wait, void *arg, acker **ret) {
    acker *a = calloc(1, sizeof *a);
    if (!a)
        return PS_STATUS_NO_MEMORY;
    a->wait = wait;
    a->arg = arg;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    if (pthread_create(&a->thread, NULL, acker_main, a) != 0) {
        pthread_mutex_destroy(&a->lock);
        pthread_cond_destroy(&a->cond);
        free(a);
        return PS_STATUS_NO_MEMORY;
    }
    *ret = a;
    return PS_STATUS_OK;
}

void acker_destroy(acker *a) {
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = true;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    free(a);
}

ps_status acker_take(acker *a, rpc_ctx *rc, uint64_t pos, bool fresh, const char *what) {
    ack_item *it = malloc(sizeof *it);
    if (!it)
        return PS_STATUS_NO_MEMORY;
    *it = (ack_item){rc, pos, fresh, what, NULL};
    pthread_mutex_lock(&a->lock);
    if (a->stopping) {
        pthread_mutex_unlock(&a->lock);
        free(it);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    rpc_ctx_defer(rc); /* before the thread can see it: it may answer at once */
    if (a->tail)
        a->tail->next = it;
    else
        a->head = it;
    a->tail = it;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    return PS_STATUS_OK;
}
