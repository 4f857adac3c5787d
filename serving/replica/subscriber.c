/* subscriber.c: see subscriber.h. */
#include "subscriber.h"

/* Notes the incarnation of a message or answer; true when it is a new one. */
static bool incarnation_changed(subscriber_state *st, uint64_t incarnation) {
    if (incarnation == 0) /* a shard that does not say */
        return false;
    bool changed = st->incarnation != 0 && st->incarnation != incarnation;
    st->incarnation = incarnation;
    return changed;
}

subscriber_verdict subscriber_state_base(subscriber_state *st, uint64_t seq, uint64_t incarnation) {
    subscriber_verdict v = {0};
    if (incarnation_changed(st, incarnation)) {
        v.repull = true;
        v.why = "restarted";
        st->seq = seq; /* a new incarnation numbers its log anew */
    }
    if (!st->have_base) { /* a new subscription (a new shard, or a shard at a new address):
                             whatever is held from it may predate the stream */
        st->have_base = true;
        st->seq = seq;
        v.repull = true;
        v.why = v.why ? v.why : "subscribed";
    }
    return v;
}

subscriber_verdict subscriber_state_message(subscriber_state *st, const Ps__Update *u) {
    subscriber_verdict v = {0};
    if (incarnation_changed(st, u->incarnation)) {
        v.repull = true;
        v.why = "restarted";
        st->seq = u->seq; /* a new incarnation numbers its log anew */
    }
    if (u->resync) {
        v.repull = true;
        v.why = v.why ? v.why : "resync";
        st->seq = u->seq; /* the shard's last seq: the stream goes on from there */
        return v;
    }
    if (u->keepalive) {
        if (u->seq > st->seq)
            st->seq = u->seq;
        return v;
    }
    v.apply = true;
    st->seq = u->seq;
    return v;
}
