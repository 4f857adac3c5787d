/* store_values.h: the loops a push runs over every value it carries: the check that
 * values are finite, and an ADD's sums (also checked).
 *
 * Why it is built this way: these loops touch every pushed byte, so they must run at
 * memory speed. At the build's default -O2 the compiler leaves the plain loops scalar
 * (it vectorizes them only at -O3), so they are written with GCC vector extensions
 * (4 floats a step, SSE2), which vectorize at any level.
 * The values are read with memcpy: any alignment is fine. An ADD's pushed values are
 * added straight from the pieces they arrived in (no copy of them first).
 */
#ifndef PS_SHARD_STORE_VALUES_H
#define PS_SHARD_STORE_VALUES_H

#include <stddef.h>

#include "bytes.h"

/* Index of the first NaN or infinity among p[0..n), or n. */
size_t store_values_first_non_finite(const float *p, size_t n);

/* dst[k] = a[k] + d[k] for k < n, d being n floats at any alignment (dst may be a or
 * d); returns the first k whose sum is not finite, or n. dst is fully written either
 * way. */
size_t store_values_add(float *dst, const float *a, const void *d, size_t n);

/* The same with d the next n floats of a cursor over pieces (a float may straddle
 * two): returns the first k whose sum is not finite (dst and the cursor are then
 * written and read only that far), or n. */
size_t store_values_add_pieces(float *dst, const float *a, ps_bytes_cursor *d, size_t n);

#endif
