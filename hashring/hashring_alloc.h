/* hashring_alloc.h: the token allocator: chooses a new member's tokens (its points'
 * positions) so that the ring stays balanced, instead of hashed, random positions
 * (`psctl ring add --balanced`; the idea of Cassandra's token allocator).
 *
 * What it optimizes: PRIMARY ownership per unit of weight (hashring_ownership with
 * r = 1), exactly; replicated ownership (r = 2, 3), which Cassandra's allocator
 * targets, only as the choice among a few draws. Why: the primary does the work for a
 * key (it applies every push with the optimizer state and orders the update stream;
 * the other owners keep copies), and primary ownership can be set exactly: a token
 * placed inside a member's arc takes from that member exactly the part of the arc
 * before it, any amount. Replicated ownership also depends on which members neighbour
 * each new point, which no choice of amounts can fix; the allocator leaves those
 * neighbourhoods as random as on a hashed ring and keeps the best of the draws.
 * Measured on rings grown 1..32 members by balanced adds, 1000 vnodes (bench_hashring,
 * test_hashring_alloc.c): primary peak/mean 1.000; r = 2 and r = 3 about 1.02-1.05
 * from 8 members on (hashed rings: 1.02-1.06), but up to 1.12 at 3-6 members, where a
 * hashed ring does better (1.02-1.04): after a two-member ring split exactly in half, a
 * third member cannot avoid neighbours with large arcs. (With weights 1 and 2 mixed,
 * small rings cannot be balanced for r > 1 at all: 2 members own every key.) A
 * replication-aware search (Cassandra's greedy one) would be the next step if small
 * replicated rings matter.
 *
 * How: with shares s_i and weights w_i of the current members and weight w for the
 * new one, find the level c at which sum_i max(0, s_i - c * w_i) = c * w (bisection):
 * every member above c per unit of weight gives its excess, the new member gets c * w.
 * On a balanced ring c = 1 / (W + w) and every member ends at exactly its weight's
 * share; on an unbalanced one the allocator takes the most from the busiest members.
 * The new member's weight * vnodes tokens are shared among the giving members in
 * proportion to what each gives; each giving member's arcs to split are a
 * length-biased pseudo-random sample of its arcs (where hashed positions would land),
 * each losing the same fraction. Up to 8 such draws are tried on a copy of the ring
 * and the one with the lowest worst peak/mean over r = 1..3 is kept (fewer past 2^17
 * points; measured at -O2: 0.04 s for 10,000 points, 0.25 s for 100,000, 1 s for
 * 500,000, 1.2 s for a single draw at 4 million). On an empty
 * ring the tokens are the member's hashed positions: a lone member owns everything
 * whatever its tokens, and random positions give later members arcs of many sizes.
 *
 * It is a pure function of the ring (deterministic: the same ring, id and weight give
 * the same tokens), so it needs no handle: the coordinator calls it once per balanced
 * add and keeps the tokens; every other process receives them in the ring.
 */
#ifndef PS_HASHRING_ALLOC_H
#define PS_HASHRING_ALLOC_H

#include <stdint.h>

#include "hashring.h"
#include "status.h"

/* Tokens for a new member `id` of `weight` joining `ring` (which must not hold it):
 * *ret_tokens (malloc'd, free it) gets weight * vnodes_per_weight positions in strictly
 * ascending order, none equal to a point of the ring, and *ret_count their number;
 * hashring_add_tokens takes them as they are. INVALID_ARGUMENT for a NULL argument, a
 * bad id or weight 0; ALREADY_EXISTS when the ring holds id; RESOURCE_EXHAUSTED when
 * the ring could not take the member (HASHRING_MAX_NODES, HASHRING_MAX_POINTS);
 * NO_MEMORY; INTERNAL if no draw fits (hash collisions; rings of a few points). Time
 * O(draws * points log points), memory about 90 bytes a point. */
ps_status hashring_alloc_tokens(const hashring *ring, const char *id, uint32_t weight,
                                uint64_t **ret_tokens, uint32_t *ret_count);

#endif
