/* hashring_ownership.c: how much of the key space each member owns (hashring.h,
 * hashring_ownership), measured exactly instead of by sampling keys.
 *
 * The point at position p owns, as primary, the arc (previous point, p]: p minus the
 * previous position, modulo 2^64 (the first point's arc wraps past the top). Every key
 * of an arc has the same owner list, the point's list in the lookup tables, so a
 * member's share for R owners is the sum of the arcs whose first R owners include it.
 * Points at the same position (possible only by a hash collision) own an empty arc
 * but the first of them, as the lookups do. One pass over the points: O(points * R).
 */
#include "hashring_internal.h"

#include <math.h>
#include <stdlib.h>

ps_status hashring_ownership(const hashring *ring, uint32_t r, double *ret_shares,
                             double *ret_peak_mean) {
    if (ring == NULL || r == 0) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const uint32_t count = ring->count;
    double *share = calloc(count ? count : 1, sizeof(*share));
    if (share == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    const uint32_t n = ring->npoints;
    const uint32_t owners = r < ring->nreplicas ? r : ring->nreplicas;
    const double circle = ldexp(1.0, 64);
    for (uint32_t j = 0; j < n; j++) {
        const uint64_t prev = ring->point_hash[j == 0 ? n - 1 : j - 1];
        double arc = (double)(ring->point_hash[j] - prev); /* modulo 2^64 */
        if (j == 0 && ring->point_hash[0] == prev) {
            arc = circle; /* one position for every point: the first owns it all */
        }
        const uint16_t *list = ring->point_lists + (size_t)j * HASHRING_MAX_REPLICAS;
        for (uint32_t k = 0; k < owners; k++) {
            share[list[k]] += arc / circle;
        }
    }

    double peak_mean = 0;
    if (count > 0) {
        uint64_t total_weight = 0;
        for (uint32_t i = 0; i < count; i++) {
            total_weight += ring->members[i].weight;
        }
        const double mean = (double)owners / (double)total_weight; /* share per weight */
        for (uint32_t i = 0; i < count; i++) {
            const double load = share[i] / ring->members[i].weight / mean;
            peak_mean = load > peak_mean ? load : peak_mean;
        }
    }
    if (ret_shares != NULL) {
        for (uint32_t i = 0; i < count; i++) {
            ret_shares[i] = share[i];
        }
    }
    if (ret_peak_mean != NULL) {
        *ret_peak_mean = peak_mean;
    }
    free(share);
    return PS_STATUS_OK;
}
