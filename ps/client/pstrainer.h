/* pstrainer.h: a training worker of one model, in C: dense tensors by name and sparse
 * rows by id with the optimizers config.json names, the worker's logical clock, and
 * asynchronous pushes with a wait (ps-lite's timestamps).
 *
 * Why it is built this way: a training loop wants to compute the next gradient while
 * the last one travels. Every operation runs, in order, on the trainer's own thread,
 * with its own ps_client (the client is not thread-safe); the *_async calls queue an
 * operation (copying its data) and return a timestamp at once, ps_trainer_wait(ts)
 * blocks until that operation (and every earlier one) is done and returns its
 * status. The blocking calls are an async call and its wait. So one trainer may be
 * used from one thread at a time, and its pushes are applied in the order made.
 *
 * The model's registry entry (tensor shapes, config.json) is re-read when older than
 * a second, so a hyper-parameter changed with psctl reaches the next pushes. A ring
 * change is the client's business (it re-routes only what a shard refused, so nothing
 * is applied twice).
 *
 * Clock: ps_trainer_clock says a step's pushes are all applied (it waits for the
 * queue first) and advances the worker's clock; the trainer registers as a worker on
 * its first clock (or first pull of a bsp/ssp or consistent model). Pulls of a
 * registered worker first wait, at most opts.wait_ms, until the model's consistency
 * lets it read (DEADLINE_EXCEEDED otherwise); a publish parks them there.
 */
#ifndef PS_CLIENT_PSTRAINER_H
#define PS_CLIENT_PSTRAINER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define PS_TRAINER_DEFAULT_WAIT_MS 600000 /* longest wait for the slowest worker */
#define PS_TRAINER_MAX_QUEUE 64           /* async operations queued at once */

typedef struct ps_trainer ps_trainer;

typedef struct ps_trainer_opts {
    const char *coordinator; /* "host:port" (required) */
    const char *model;       /* the model it trains (required) */
    uint64_t version;        /* 0 = the latest, re-read as it changes */
    const char *name;        /* the worker's name in the coordinator's log; may be NULL */
    int64_t wait_ms;         /* 0 = PS_TRAINER_DEFAULT_WAIT_MS */
} ps_trainer_opts;

/* Connects (a client of its own) and starts the trainer's thread. On failure err says
 * why. */
ps_status ps_trainer_create(const ps_trainer_opts *opts, ps_trainer **ret_trainer, char *err,
                            size_t err_len);
/* Finishes what is queued, leaves as a worker, stops. Accepts NULL. */
void ps_trainer_destroy(ps_trainer *t);

/* The message of the last failure a call or a wait returned. */
const char *ps_trainer_error(const ps_trainer *t);

/* Floats of a dense tensor (0 when unknown). */
uint64_t ps_trainer_tensor_count(ps_trainer *t, const char *tensor);
/* Floats per row of a table (0 when unknown). */
uint32_t ps_trainer_table_dim(ps_trainer *t, const char *table);

/* Blocking operations. pull: `count` floats of the tensor into dst. push: a gradient of
 * the tensor's size, applied by the tensor's optimizer (FAILED_PRECONDITION when it has
 * none). Rows: n ids (repeats allowed: push sums their gradients), dim floats each. */
ps_status ps_trainer_pull(ps_trainer *t, const char *tensor, float *dst, uint64_t count);
ps_status ps_trainer_push(ps_trainer *t, const char *tensor, const float *grad, uint64_t count);
ps_status ps_trainer_pull_rows(ps_trainer *t, const char *table, size_t n, const uint64_t *ids,
                               float *out);
ps_status ps_trainer_push_rows(ps_trainer *t, const char *table, size_t n, const uint64_t *ids,
                               const float *grads);

/* Asynchronous pushes: the data is copied, *ret_ts gets the operation's timestamp (>= 1,
 * increasing). Blocks while PS_TRAINER_MAX_QUEUE operations are queued. */
ps_status ps_trainer_push_async(ps_trainer *t, const char *tensor, const float *grad,
                                uint64_t count, uint64_t *ret_ts);
ps_status ps_trainer_push_rows_async(ps_trainer *t, const char *table, size_t n,
                                     const uint64_t *ids, const float *grads, uint64_t *ret_ts);
/* Waits until operation ts (and everything queued before it) is done; its status. */
ps_status ps_trainer_wait(ps_trainer *t, uint64_t ts);

/* The step's pushes are done: waits for the queue, then advances the clock by one.
 * *ret_clock (may be NULL) gets the new clock. */
ps_status ps_trainer_clock(ps_trainer *t, uint64_t *ret_clock);

#endif
