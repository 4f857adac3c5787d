/* coord_suspects.c: faster failure detection for failover (see coord_internal.h). A
 * shard on the ring whose heartbeat is late (past COORD_SUSPECT_BEATS_X2 / 2 intervals)
 * but not yet dead by time is asked directly (the Health probe, outside the lock); when
 * it cannot be reached at all (UNAVAILABLE: nothing listens, the process is gone) it is
 * declared dead at once, so the failover does not wait for three missed heartbeats. A
 * shard that answers, or only answers slowly (DEADLINE_EXCEEDED), is left to the usual
 * rule: a slow machine is not a dead one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord_internal.h"

#define COORD_SUSPECT_BEATS_X2 3 /* late after 1.5 heartbeat intervals */
#define COORD_SUSPECTS_MAX 16    /* asked per sweep at most */

typedef struct suspect {
    char id[MEMBERSHIP_ID_MAX + 1];
    char addr[MEMBERSHIP_ADDR_MAX + 1];
} suspect;

static bool late(const coord_ctx *c, const membership_node *n, int64_t now) {
    return n->role == MEMBERSHIP_ROLE_SHARD && n->in_ring && n->alive && n->last_hb_ms &&
           (now - n->last_hb_ms) * 2 > (int64_t)c->heartbeat_ms * COORD_SUSPECT_BEATS_X2;
}

void coord_probe_suspects(coord_ctx *c) {
    if (c->replication < 2)
        return; /* with one copy nobody takes its keys over: no hurry */
    suspect *s = calloc(COORD_SUSPECTS_MAX, sizeof *s);
    if (!s)
        return;
    size_t n = 0;
    pthread_mutex_lock(&c->lock);
    int64_t now = coord_now(c);
    for (size_t i = 0; i < membership_node_count(c->members) && n < COORD_SUSPECTS_MAX; i++) {
        const membership_node *m = membership_node_at(c->members, i);
        if (!late(c, m, now))
            continue;
        snprintf(s[n].id, sizeof s[n].id, "%s", m->id);
        snprintf(s[n].addr, sizeof s[n].addr, "%s", m->addr);
        n++;
    }
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < n; i++) {
        uint64_t keys = 0;
        char why[160] = "";
        ps_status st = c->probe(c->probe_arg, s[i].id, s[i].addr, &keys, why, sizeof why);
        if (st != PS_STATUS_UNAVAILABLE)
            continue;
        pthread_mutex_lock(&c->lock);
        membership_node *m = membership_node_find(c->members, s[i].id);
        now = coord_now(c);
        if (m && late(c, m, now) && strcmp(m->addr, s[i].addr) == 0) {
            m->alive = false;
            coord_event(c, COORD_EVENT_WARN,
                        "shard %s at %s is dead: its heartbeat is %lld ms late and nothing "
                        "answers there (%s)",
                        m->id, m->addr, (long long)(now - m->last_hb_ms), why);
        }
        pthread_mutex_unlock(&c->lock);
    }
    free(s);
}
