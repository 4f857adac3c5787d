/* store_values.c: see store_values.h. */
#include "store_values.h"

#include <stdint.h>
#include <string.h>

#define EXP_MASK 0x7f800000u /* an all-ones exponent: NaN or infinity */
#define BLOCK 256            /* floats checked between early exits */

/* 16-byte vectors: SSE2, which every x86-64 has, does these in one instruction each
 * (wider ones are split lane by lane without AVX). */
typedef uint32_t u32x4 __attribute__((vector_size(16)));
typedef int32_t i32x4 __attribute__((vector_size(16)));
typedef float f32x4 __attribute__((vector_size(16)));

static int any_lane(i32x4 v) {
    return (v[0] | v[1] | v[2] | v[3]) != 0;
}

static size_t first_scalar(const float *p, size_t from, size_t n) {
    for (size_t i = from; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, p + i, sizeof bits);
        if ((bits & EXP_MASK) == EXP_MASK)
            return i;
    }
    return n;
}

size_t store_values_first_non_finite(const float *p, size_t n) {
    size_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) {
        i32x4 bad = {0};
        for (size_t k = 0; k < BLOCK; k += 4) {
            u32x4 v;
            memcpy(&v, p + i + k, sizeof v);
            bad |= (v & EXP_MASK) == EXP_MASK;
        }
        if (any_lane(bad))
            break; /* the block holds one: find it */
    }
    return first_scalar(p, i, n);
}

size_t store_values_add(float *dst, const float *a, const void *d, size_t n) {
    const uint8_t *db = d; /* any alignment: read with memcpy */
    i32x4 bad = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f32x4 x, y;
        memcpy(&x, a + i, sizeof x);
        memcpy(&y, db + i * sizeof(float), sizeof y);
        f32x4 s = x + y;
        memcpy(dst + i, &s, sizeof s);
        bad |= ((u32x4)s & EXP_MASK) == EXP_MASK;
    }
    for (; i < n; i++) {
        float y;
        memcpy(&y, db + i * sizeof(float), sizeof y);
        dst[i] = a[i] + y;
    }
    return any_lane(bad) || first_scalar(dst, n - n % 4, n) < n ? first_scalar(dst, 0, n) : n;
}

size_t store_values_add_pieces(float *dst, const float *a, ps_bytes_cursor *d, size_t n) {
    size_t k = 0;
    while (k < n) {
        const uint8_t *run = NULL;
        size_t got = ps_bytes_next(d, (n - k) * sizeof(float), &run), whole = got / sizeof(float);
        if (got == 0)
            return k; /* fewer bytes than floats: the caller checked the total */
        size_t bad = store_values_add(dst + k, a + k, run, whole);
        if (bad < whole)
            return k + bad;
        k += whole;
        size_t part = got - whole * sizeof(float);
        if (part) { /* a float cut between two pieces */
            uint8_t four[sizeof(float)];
            memcpy(four, run + whole * sizeof(float), part);
            if (!ps_bytes_take(d, four + part, sizeof four - part))
                return k;
            if (store_values_add(dst + k, a + k, four, 1) < 1)
                return k;
            k++;
        }
    }
    return n;
}
