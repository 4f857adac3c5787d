/* workers.h: the training workers of each model and their logical clocks, the state
 * behind BSP, SSP and ASP (DESIGN.md "Training consistency").
 *
 * A worker registers for a model and gets an id; after each step it advances its clock
 * (the number of steps it has finished and pushed). Before reading for its next step, a
 * worker at clock c may proceed once every live worker of the model has clock >= c - s,
 * where s is the model's staleness bound (BSP: 0; SSP: its "staleness"; ASP: never
 * waits). A worker that has not been heard from (clock, wait or heartbeat) for the
 * timeout is dead: it no longer holds the others back, and it must register again.
 * A new worker starts at the slowest live worker's clock, so joining never blocks
 * anyone.
 *
 * Why it is built this way: pure bookkeeping with the time passed in, so the rules are
 * unit-tested without processes or sleeps; the coordinator holds its lock around
 * every call and does the waiting (coord_workers.c).
 */
#ifndef PS_COORDINATOR_WORKERS_H
#define PS_COORDINATOR_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define WORKERS_DEFAULT_TIMEOUT_MS 10000
#define WORKERS_DEFAULT_MAX 4096 /* live workers over all models */
#define WORKERS_NAME_MAX 127
/* The largest clock a worker may report: far past any training run, and below
 * UINT64_MAX, which workers_min_clock returns for "no live worker". */
#define WORKERS_MAX_CLOCK (UINT64_MAX / 2)

typedef struct workers workers;

typedef struct workers_opts {
    int64_t timeout_ms; /* silence after which a worker is dead; 0 = the default */
    size_t max_workers; /* 0 = WORKERS_DEFAULT_MAX */
} workers_opts;

ps_status workers_create(const workers_opts *opts, workers **ret_workers);
void workers_destroy(workers *w); /* accepts NULL */

/* A new worker of `model` (name: for messages, may be empty; it must be text, see
 * ps_text_valid, else INVALID_ARGUMENT). *ret_id is non-zero and never reused;
 * *ret_clock its starting clock. RESOURCE_EXHAUSTED past max_workers. */
ps_status workers_register(workers *w, const char *model, const char *name, int64_t now_ms,
                           uint64_t *ret_id, uint64_t *ret_clock, char *err, size_t err_len);

/* Worker `id` of `model` finished step `clock` (its clock becomes that; it may not go
 * back, nor pass WORKERS_MAX_CLOCK: INVALID_ARGUMENT). NOT_FOUND for an unknown or dead worker (err
 * says to register again). Counts as a heartbeat. */
ps_status workers_clock(workers *w, const char *model, uint64_t id, uint64_t clock, int64_t now_ms,
                        char *err, size_t err_len);

/* A sign of life from worker id (NOT_FOUND as above). */
ps_status workers_touch(workers *w, const char *model, uint64_t id, int64_t now_ms, char *err,
                        size_t err_len);

/* The worker leaves (a clean close); NOT_FOUND when unknown. */
ps_status workers_leave(workers *w, const char *model, uint64_t id);

/* Marks workers silent for the timeout dead; returns how many died (their ids go to
 * ret_dead[0..max) for logging, when non-NULL). */
size_t workers_expire(workers *w, int64_t now_ms, uint64_t *ret_dead, size_t max);

/* The smallest clock among the live workers of a model (UINT64_MAX when none), and
 * how many are live. */
uint64_t workers_min_clock(const workers *w, const char *model, size_t *ret_live);

/* Worker id is (or no longer is) parked in a wait: it pushes nothing until it returns.
 * NOT_FOUND as above. */
ps_status workers_park(workers *w, const char *model, uint64_t id, bool parked);
/* True when every live worker of the model is parked (or there is none); *ret_live
 * (may be NULL) gets how many are live. */
bool workers_all_parked(const workers *w, const char *model, size_t *ret_live);

/* True when a worker at `clock` may read under staleness bound s: every live worker
 * has clock >= clock - s. */
bool workers_ready(const workers *w, const char *model, uint64_t clock, uint64_t staleness);

#endif
