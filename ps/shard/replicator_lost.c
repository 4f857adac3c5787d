/* replicator_lost.c: which changes a ring change may have kept from one of their keys'
 * owners for good (see replicator_lost in replicator.h).
 *
 * A change a backup did not get through its queue (dropped: the backup restarted,
 * refused or stayed unreachable; or never queued: it waited for a sync whose images
 * would carry the key) reaches it only through this shard's next sync of it, and a sync
 * sends only the keys this shard is primary for on the rings it runs under. Under the
 * rings the change was made under that includes the change's keys; once the rings have
 * changed (a join committed and made the backup the keys' primary, say), it may not. So
 * each target keeps the positions of the changes it was left to its sync for (`left`,
 * with the view they were left under), a sync that starts under that view takes them
 * over (`covering`, settled when it ends), and a view change or a sync under another
 * view makes them lost. A target the next view takes off both rings owns nothing: what
 * it lacked is lost to nobody (with a view between, it may have owned them: lost). */
#include "replicator_internal.h"

static void range_add(repl_range *to, uint64_t lo, uint64_t hi) {
    if (!to->lo || lo < to->lo)
        to->lo = lo;
    if (hi > to->hi)
        to->hi = hi;
}

void repl_lost_add_locked(replicator *r, uint64_t lo, uint64_t hi) {
    if (!lo)
        return;
    for (uint32_t i = 0; i < r->n_lost; i++) /* overlapping or adjacent: one range */
        if (lo <= r->lost[i].hi + 1 && r->lost[i].lo <= hi + 1) {
            range_add(&r->lost[i], lo, hi);
            return;
        }
    if (r->n_lost == REPL_LOST_RANGES) { /* full: the two oldest become one (wider) */
        range_add(&r->lost[0], r->lost[1].lo, r->lost[1].hi);
        for (uint32_t i = 1; i + 1 < r->n_lost; i++)
            r->lost[i] = r->lost[i + 1];
        r->n_lost--;
    }
    r->lost[r->n_lost++] = (repl_range){lo, hi};
}

static void left_add(repl_target *t, uint64_t lo, uint64_t hi, uint64_t view) {
    if (t->left.lo && t->left_view != view) { /* left under another view: lost */
        repl_lost_add_locked(t->r, t->left.lo, t->left.hi);
        t->left = (repl_range){0};
    }
    range_add(&t->left, lo, hi);
    t->left_view = view;
}

void repl_left_add_locked(repl_target *t, uint64_t pos, uint64_t view) {
    left_add(t, pos, pos, view);
}

bool repl_owned_nothing_since(const repl_target *t, uint64_t view) {
    /* taken off both rings by the very next view: what it lacked is lost to nobody. Not
       so when a view came between (a commit that made it the keys' primary, whose
       images may have set their other owners back before it was taken off) */
    return t->removed && !t->moved && t->removed_view && view + 1 >= t->removed_view;
}

void repl_left_view_changed_locked(repl_target *t) {
    if (t->left.lo && !repl_owned_nothing_since(t, t->left_view))
        repl_lost_add_locked(t->r, t->left.lo, t->left.hi);
    t->left = (repl_range){0};
}

void repl_left_sync_start_locked(repl_target *t, uint64_t view) {
    if (t->left.lo && t->left_view == view) {
        t->covering = t->left;
        t->covering_view = view;
    } else if (t->left.lo) {
        repl_lost_add_locked(t->r, t->left.lo, t->left.hi);
    }
    t->left = (repl_range){0};
}

void repl_left_sync_end_locked(repl_target *t, bool ok) {
    if (!ok && t->covering.lo) { /* the images may not have arrived: left again */
        if (t->covering_view == t->r->view)
            left_add(t, t->covering.lo, t->covering.hi, t->covering_view);
        else
            repl_lost_add_locked(t->r, t->covering.lo, t->covering.hi);
    }
    t->covering = (repl_range){0};
}

bool repl_lost_locked(const replicator *r, uint64_t pos) {
    for (uint32_t i = 0; i < r->n_lost; i++)
        if (r->lost[i].lo <= pos && pos <= r->lost[i].hi)
            return true;
    return false;
}

bool replicator_lost(replicator *r, uint64_t pos) {
    pthread_mutex_lock(&r->lock);
    bool lost = repl_lost_locked(r, pos);
    pthread_mutex_unlock(&r->lock);
    return lost;
}
