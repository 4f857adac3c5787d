/* psclient_route.c: the routing loop every keyed operation runs through (see
 * psclient_internal.h), and the client's reusable scratch. Every operation keeps the
 * set of key indices not yet done; each round groups them by owner under the current
 * ring, starts the calls to every shard (one per shard, or a few of at most
 * CALL_FLOATS each for large transfers; all in flight at once), then collects them in
 * order; keys a shard refuses because the ring moved stay pending, the ring is
 * fetched again and the next round routes them anew. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "psclient_internal.h"
#include "util.h"

/* ------------------------------------------------------------------ scratch --- */

/* Grows *p to hold `want` elements of `size` bytes (kept on failure). */
static bool grow(void **p, size_t want, size_t size) {
    void *q = realloc(*p, (want ? want : 1) * size);
    if (q)
        *p = q;
    return q != NULL;
}

/* A call of a round: the keys group[first..first+m) to one shard. */
typedef struct psclient_call {
    uint32_t shard;
    size_t first, m;
    rpc_pending *pending; /* in flight, or NULL */
} psclient_call;

static bool route_reserve(ps_client *c, size_t n) {
    if (n <= c->route_cap)
        return true;
    size_t want = n < 2 * c->route_cap ? 2 * c->route_cap : n;
    if (!grow((void **)&c->calls, want, sizeof *c->calls) ||
        !grow((void **)&c->pending, want, sizeof *c->pending) ||
        !grow((void **)&c->group, want, sizeof *c->group) ||
        !grow((void **)&c->retry, want, sizeof *c->retry) ||
        !grow((void **)&c->owner, want, sizeof *c->owner))
        return false;
    c->route_cap = want;
    return true;
}

static bool shards_reserve(ps_client *c, uint32_t n) {
    if (n <= c->shard_cap)
        return true;
    if (!grow((void **)&c->shard_first, n, sizeof *c->shard_first) ||
        !grow((void **)&c->shard_m, n, sizeof *c->shard_m) ||
        !grow((void **)&c->win_next, n, sizeof *c->win_next) ||
        !grow((void **)&c->win_done, n, sizeof *c->win_done) ||
        !grow((void **)&c->win_end, n, sizeof *c->win_end))
        return false;
    c->shard_cap = n;
    return true;
}

ps_status psclient_req_reserve(ps_client *c, size_t m) {
    if (m <= c->req_cap)
        return PS_STATUS_OK;
    size_t want = m < 2 * c->req_cap ? 2 * c->req_cap : m;
    if (!grow((void **)&c->req_keys, want, sizeof *c->req_keys) ||
        !grow((void **)&c->req_lens, want, sizeof *c->req_lens) ||
        !grow((void **)&c->req_names, want, sizeof *c->req_names) ||
        !grow((void **)&c->parts, want, sizeof *c->parts))
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    c->req_cap = want;
    return PS_STATUS_OK;
}

void psclient_scratch_free(ps_client *c) {
    free(c->pending);
    free(c->group);
    free(c->retry);
    free(c->owner);
    free(c->shard_first);
    free(c->shard_m);
    free(c->win_next);
    free(c->win_done);
    free(c->win_end);
    free(c->calls);
    free(c->req_keys);
    free(c->req_lens);
    free(c->req_names);
    free(c->parts);
}

/* ------------------------------------------------------------------ routing --- */

/* What a round keeps of the first failure: the earliest round's first call (calls go
 * in shard order). */
typedef struct route_failure {
    ps_status st;
    int round;   /* of the failure kept */
    size_t call; /* its index in that round */
    int now;     /* the round running */
    char err[sizeof((ps_client *)0)->err];
} route_failure;

static void failure_note(ps_client *c, route_failure *f, ps_status st, size_t call) {
    if (f->st != PS_STATUS_OK && (f->round < f->now || f->call <= call))
        return;
    f->st = st;
    f->round = f->now;
    f->call = call;
    memcpy(f->err, c->err, sizeof f->err);
}

/* Groups the pending keys pending[a..b) by owner under the current ring (group[a..b)
 * then holds each shard's keys contiguously) and cuts each shard's keys into calls,
 * appended to c->calls from n_calls on; returns the new count. */
static size_t route_group(ps_client *c, const uint64_t *keys, size_t a, size_t b,
                          const shard_op *op, size_t n_calls) {
    for (uint32_t s = 0; s < c->n_shards; s++)
        c->shard_m[s] = 0;
    for (size_t i = a; i < b; i++) {
        c->owner[i] = hashring_primary(c->ring, keys[c->pending[i]]);
        c->shard_m[c->owner[i]]++;
    }
    size_t first = a;
    for (uint32_t s = 0; s < c->n_shards; s++) {
        c->shard_first[s] = first;
        first += c->shard_m[s];
        c->shard_m[s] = 0;
    }
    for (size_t i = a; i < b; i++) {
        uint32_t s = c->owner[i];
        c->group[c->shard_first[s] + c->shard_m[s]++] = c->pending[i];
    }
    for (uint32_t s = 0; s < c->n_shards; s++) {
        size_t at = c->shard_first[s], end = at + c->shard_m[s];
        while (at < end) {
            psclient_call *call = &c->calls[n_calls++];
            *call = (psclient_call){.shard = s, .first = at, .m = 1};
            uint64_t floats = op->lens ? op->lens[c->group[at]] : 0;
            for (at++; at < end; at++, call->m++) {
                uint64_t more = op->lens ? op->lens[c->group[at]] : 0;
                if (call->m == CALL_KEYS || (op->lens && floats + more > op->call_floats))
                    break;
                floats += more;
            }
        }
    }
    return n_calls;
}

/* Keys idx[0..m) go to c->retry (refused because the ring moved). */
static void retry_add(ps_client *c, size_t *kept, const size_t *idx, size_t m) {
    memcpy(c->retry + *kept, idx, m * sizeof *idx);
    *kept += m;
}

/* A call's outcome that sends its keys round again: the ring moved, or (for ops that
 * may repeat) the shard is unreachable and the wait for a failover has time left. */
static bool again(ps_client *c, const shard_op *op, ps_status cs, bool *unreachable) {
    if (cs == PS_STATUS_WRONG_EPOCH)
        return true;
    if (!op->retry_unavailable || c->replication < 2 || ps_now_ms() >= c->failover_deadline ||
        (cs != PS_STATUS_UNAVAILABLE && cs != PS_STATUS_DEADLINE_EXCEEDED))
        return false;
    *unreachable = true;
    return true;
}

/* What a round's calls share while they are started and collected. */
typedef struct round_state {
    const shard_op *op;
    void *arg;
    route_failure *fail;
    size_t kept;      /* keys sent round again, in c->retry */
    bool unreachable; /* see again */
} round_state;

static void call_start(ps_client *c, round_state *r, size_t k) {
    psclient_call *call = &c->calls[k];
    const size_t *idx = c->group + call->first;
    ps_status cs = r->op->start(c, call->shard, idx, call->m, r->arg, &call->pending);
    if (again(c, r->op, cs, &r->unreachable))
        retry_add(c, &r->kept, idx, call->m);
    else if (cs != PS_STATUS_OK)
        failure_note(c, r->fail, cs, k);
}

static void call_finish(ps_client *c, round_state *r, size_t k) {
    psclient_call *call = &c->calls[k];
    if (!call->pending)
        return;
    const size_t *idx = c->group + call->first;
    ps_status cs = r->op->finish(c, call->shard, idx, call->m, r->arg, call->pending);
    call->pending = NULL;
    if (again(c, r->op, cs, &r->unreachable))
        retry_add(c, &r->kept, idx, call->m);
    else if (cs != PS_STATUS_OK)
        failure_note(c, r->fail, cs, k);
}

/* Starts the calls with at most op->window in flight per shard, the shards in turn
 * (a call at a time each), collecting a shard's oldest call before it gets another
 * (calls are grouped by shard in c->calls). */
static void start_windowed(ps_client *c, round_state *r, size_t n_calls, bool keep_going) {
    for (uint32_t s = 0; s < c->n_shards; s++)
        c->win_next[s] = c->win_done[s] = c->win_end[s] = 0;
    for (size_t k = n_calls; k-- > 0;) { /* each shard's calls: [win_next, win_end) */
        uint32_t s = c->calls[k].shard;
        if (c->win_end[s] == 0)
            c->win_end[s] = k + 1;
        c->win_next[s] = c->win_done[s] = k;
    }
    for (bool more = true; more;) {
        more = false;
        for (uint32_t s = 0; s < c->n_shards; s++) {
            if (c->win_next[s] == c->win_end[s] || (!keep_going && r->fail->st != PS_STATUS_OK))
                continue;
            if (c->win_next[s] - c->win_done[s] >= r->op->window)
                call_finish(c, r, c->win_done[s]++);
            call_start(c, r, c->win_next[s]++);
            more = true;
        }
    }
}

/* One round over the n_pending keys: every call started (without keep_going, none
 * after a failure), then each collected in order. Without op->window the keys are
 * routed in waves of CALL_KEYS per shard, each wave's calls started before the next
 * wave is routed, so the shards work on the first calls while the client routes the
 * rest; with op->window every key is routed first, then calls are started and
 * collected a window at a time. Keys refused with WRONG_EPOCH (or unreachable, see
 * again) go to c->retry (*ret_kept). */
static void route_round(ps_client *c, const uint64_t *keys, size_t n_pending, const shard_op *op,
                        void *arg, bool keep_going, route_failure *fail, size_t *ret_kept,
                        bool *unreachable) {
    round_state r = {.op = op, .arg = arg, .fail = fail};
    size_t n_calls = 0;
    if (op->window > 0) {
        n_calls = route_group(c, keys, 0, n_pending, op, 0);
        start_windowed(c, &r, n_calls, keep_going);
    } else {
        const size_t wave = (size_t)CALL_KEYS * c->n_shards;
        for (size_t a = 0; a < n_pending && (keep_going || fail->st == PS_STATUS_OK); a += wave) {
            size_t k = n_calls;
            n_calls =
                route_group(c, keys, a, n_pending - a < wave ? n_pending : a + wave, op, n_calls);
            for (; k < n_calls && (keep_going || fail->st == PS_STATUS_OK); k++)
                call_start(c, &r, k);
        }
    }
    for (size_t k = 0; k < n_calls; k++)
        call_finish(c, &r, k);
    *ret_kept = r.kept;
    *unreachable = r.unreachable;
}

ps_status psclient_route_op(ps_client *c, size_t n, const uint64_t *keys, const shard_op *op,
                            void *arg, bool keep_going) {
    route_failure fail = {.st = PS_STATUS_OK};
    ps_status st = PS_STATUS_OK;
    if (!route_reserve(c, n))
        return psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
    size_t n_pending = n;
    for (size_t i = 0; i < n; i++)
        c->pending[i] = i;
    c->failover_deadline = ps_now_ms() + c->failover_wait_ms;
    int moved = 0, pause_ms = FAILOVER_PAUSE_MIN_MS;
    for (int round = 0; n_pending > 0; round++) {
        if (moved == MAX_ROUNDS) {
            st = psclient_fail(c, PS_STATUS_UNAVAILABLE,
                               "the ring kept moving: %zu keys still unplaced after %d tries",
                               n_pending, MAX_ROUNDS);
            break;
        }
        if (c->n_shards == 0) {
            st = psclient_fail(c, PS_STATUS_UNAVAILABLE, "no shards on the ring (epoch %llu)",
                               (unsigned long long)ps_client_epoch(c));
            break;
        }
        if (!shards_reserve(c, c->n_shards)) {
            st = psclient_fail(c, PS_STATUS_NO_MEMORY, "out of memory");
            break;
        }
        size_t kept = 0;
        bool unreachable = false;
        fail.now = round;
        c->route_round = round;
        route_round(c, keys, n_pending, op, arg, keep_going, &fail, &kept, &unreachable);
        memcpy(c->pending, c->retry, kept * sizeof *c->retry);
        n_pending = kept;
        if (fail.st != PS_STATUS_OK && !keep_going)
            break;
        if (kept == 0)
            continue;
        if (!unreachable) {
            moved++;
            if ((st = ps_client_refresh(c)) != PS_STATUS_OK)
                break;
            continue;
        }
        /* a shard is unreachable: wait a little for the ring to move its keys on (a
         * coordinator that cannot be asked either leaves the ring held as it is) */
        struct timespec pause = {pause_ms / 1000, (long)(pause_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
        pause_ms = pause_ms * 2 > FAILOVER_PAUSE_MAX_MS ? FAILOVER_PAUSE_MAX_MS : pause_ms * 2;
        (void)ps_client_refresh(c); /* past the deadline, the next round's failure is said */
    }
    if (fail.st == PS_STATUS_UNAVAILABLE || fail.st == PS_STATUS_DEADLINE_EXCEEDED)
        (void)ps_client_refresh(c); /* the next op starts on a fresh ring: a failover may
                                     * have moved the keys (with no failover wait, nothing
                                     * else would make this client look) */
    if (fail.st != PS_STATUS_OK) {  /* the first failure is the one reported */
        memcpy(c->err, fail.err, sizeof fail.err);
        return fail.st;
    }
    return st;
}
