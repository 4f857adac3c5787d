/* hashring_alloc.c: the balanced token allocator (hashring_alloc.h says what it does
 * and why). It reads the ring only through hashring.h: its points, members, weights.
 *
 * Steps, for a ring of n points and m members:
 *   1. arcs: the arc of point j is (point j-1, point j], its length modulo 2^64;
 *   2. level: bisection for c with sum_i max(0, s_i - c w_i) = c w; need_i is member
 *      i's excess max(0, s_i - c w_i), what the new member takes from it;
 *   3. apportion: the T = weight * vnodes new tokens in proportion to need_i (largest
 *      remainders), only to members with an arc to split;
 *   4. draw: member i's k_i arcs to split are a length-biased pseudo-random sample of
 *      its arcs (where hashed positions would land); each chosen arc loses the same
 *      fraction need_i / (their total), the token sitting that far past the arc's
 *      start. When k_i exceeds its arcs (tiny rings), arcs take several tokens, which
 *      split the taken part among themselves and change nothing else;
 *   5. score: each of up to ALLOC_DRAWS draws (different samples) is tried on a copy of
 *      the ring and the one with the lowest worst peak/mean over r = 1..3 is kept.
 *      Primary shares come out the same in every draw; the draws differ in which
 *      members neighbour the new points, which is what replicated ownership depends on.
 * Arithmetic on positions is in uint64 modulo 2^64; shares are doubles (fractions of
 * 2^64), precise to far below one part in a million.
 */
#include "hashring_alloc.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LEVEL_ITERATIONS 200         /* bisection steps for the level c (doubles stop moving) */
#define ALLOC_DRAWS 8                /* draws tried for one member, the best is kept */
#define ALLOC_DRAW_POINTS (1u << 20) /* draws * points at most (at least one draw) */
#define ALLOC_SCORE_REPLICAS 3       /* draws are scored on r = 1..this */
/* At most this part of the drawn arcs is taken; past it a member's largest arcs are
 * split instead (a draw of unusually small arcs). */
#define ALLOC_MAX_FRACTION 0.9

/* An arc: its length and the point that ends it. */
typedef struct alloc_arc {
    uint64_t len;   /* modulo 2^64; 0 for a repeated position */
    uint32_t point; /* index of the point that ends it (and owns it) */
} alloc_arc;

/* A candidate arc to split and its sort key (smallest chosen first). */
typedef struct alloc_pick {
    double cost;
    alloc_arc arc;
} alloc_pick;

/* The ring as arrays, and the working state of one allocation. */
typedef struct alloc_work {
    uint32_t n;          /* points */
    uint32_t m;          /* members */
    uint64_t *pos;       /* [n] point positions, clockwise */
    uint32_t *owner;     /* [n] member index of each point */
    alloc_arc *by_owner; /* [n] arcs grouped by owner, each group largest first */
    alloc_pick *pick;    /* [n] scratch: the candidates of one member */
    uint32_t *start;     /* [m + 1] where each owner's group begins in by_owner */
    uint32_t *splits;    /* [m] arcs of each member that can take a token (length >= 2) */
    uint32_t *weight;    /* [m] */
    double *need;        /* [m] share to take from each member */
    uint32_t *quota;     /* [m] new tokens placed in each member's arcs */
} alloc_work;

static void work_free(alloc_work *w) {
    free(w->pos);
    free(w->owner);
    free(w->by_owner);
    free(w->pick);
    free(w->start);
    free(w->splits);
    free(w->weight);
    free(w->need);
    free(w->quota);
}

static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a;
    const uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Orders arcs by length, largest first, then by point: deterministic. */
static int cmp_arc_desc(const void *a, const void *b) {
    const alloc_arc *x = a;
    const alloc_arc *y = b;
    if (x->len != y->len) {
        return x->len > y->len ? -1 : 1;
    }
    return x->point < y->point ? -1 : x->point > y->point;
}

/* Orders candidates by cost, lowest first, then by point: deterministic. */
static int cmp_pick(const void *a, const void *b) {
    const alloc_pick *x = a;
    const alloc_pick *y = b;
    if (x->cost != y->cost) {
        return x->cost < y->cost ? -1 : 1;
    }
    return x->arc.point < y->arc.point ? -1 : x->arc.point > y->arc.point;
}

/* Fills the arrays from the ring; NO_MEMORY. */
static ps_status work_load(const hashring *ring, alloc_work *w) {
    w->n = hashring_point_count(ring);
    w->m = hashring_node_count(ring);
    const size_t n = w->n;
    const size_t m = w->m;
    w->pos = malloc(n * sizeof(*w->pos));
    w->owner = malloc(n * sizeof(*w->owner));
    w->by_owner = malloc(n * sizeof(*w->by_owner));
    w->pick = malloc(n * sizeof(*w->pick));
    w->start = calloc(m + 1, sizeof(*w->start));
    w->splits = calloc(m, sizeof(*w->splits));
    w->weight = calloc(m, sizeof(*w->weight));
    w->need = calloc(m, sizeof(*w->need));
    w->quota = calloc(m, sizeof(*w->quota));
    uint32_t *fill = malloc(m * sizeof(*fill));
    if (!w->pos || !w->owner || !w->by_owner || !w->pick || !w->start || !w->splits || !w->weight ||
        !w->need || !w->quota || !fill) {
        free(fill);
        return PS_STATUS_NO_MEMORY;
    }
    for (uint32_t i = 0; i < w->m; i++) {
        hashring_node_info info;
        hashring_node_at(ring, i, &info);
        w->weight[i] = info.weight;
    }
    for (uint32_t j = 0; j < w->n; j++) {
        hashring_point_at(ring, j, &w->pos[j], &w->owner[j]);
        w->start[w->owner[j] + 1]++;
    }
    for (uint32_t i = 0; i < w->m; i++) {
        w->start[i + 1] += w->start[i];
    }
    memcpy(fill, w->start, m * sizeof(*fill));
    for (uint32_t j = 0; j < w->n; j++) { /* group by owner: a counting sort */
        uint64_t len = w->pos[j] - w->pos[j == 0 ? w->n - 1 : j - 1]; /* modulo 2^64 */
        if (j == 0 && len == 0) { /* every point at one position (or just one point) */
            len = UINT64_MAX;     /* the first owns the whole circle, short of one key */
        }
        w->by_owner[fill[w->owner[j]]++] = (alloc_arc){.len = len, .point = j};
        w->splits[w->owner[j]] += len >= 2;
    }
    free(fill);
    for (uint32_t i = 0; i < w->m; i++) {
        qsort(w->by_owner + w->start[i], w->start[i + 1] - w->start[i], sizeof(*w->by_owner),
              cmp_arc_desc);
    }
    return PS_STATUS_OK;
}

/* Step 2: need_i for every member, from shares and weights. */
static void work_level(alloc_work *w, uint32_t weight) {
    const double circle = ldexp(1.0, 64);
    double *share = w->need; /* shares first, turned into needs below */
    for (uint32_t k = 0; k < w->n; k++) {
        share[w->owner[w->by_owner[k].point]] += (double)w->by_owner[k].len / circle;
    }
    double lo = 0, hi = 0;
    for (uint32_t i = 0; i < w->m; i++) {
        hi = fmax(hi, share[i] / w->weight[i]);
    }
    for (int it = 0; it < LEVEL_ITERATIONS; it++) { /* given(c) - c * weight falls with c */
        const double c = (lo + hi) / 2;
        double given = 0;
        for (uint32_t i = 0; i < w->m; i++) {
            given += fmax(0, share[i] - c * w->weight[i]);
        }
        if (given > c * weight) {
            lo = c;
        } else {
            hi = c;
        }
    }
    for (uint32_t i = 0; i < w->m; i++) {
        share[i] = fmax(0, share[i] - hi * w->weight[i]);
    }
}

/* Step 3: quota_i, summing to `total`, in proportion to need_i among the members with an
 * arc to split. */
static void work_apportion(alloc_work *w, uint32_t total) {
    double sum = 0;
    uint32_t best = UINT32_MAX; /* the neediest member that can take tokens */
    for (uint32_t i = 0; i < w->m; i++) {
        if (w->splits[i] > 0 && w->need[i] > 0) {
            sum += w->need[i];
            if (best == UINT32_MAX || w->need[i] > w->need[best]) {
                best = i;
            }
        }
    }
    if (best == UINT32_MAX) { /* nobody gives: the largest arc overall takes them all */
        for (uint32_t i = 0; i < w->m; i++) {
            if (w->splits[i] > 0 && (best == UINT32_MAX || w->by_owner[w->start[i]].len >
                                                               w->by_owner[w->start[best]].len)) {
                best = i;
            }
        }
        w->quota[best] = total;
        return;
    }
    uint32_t given = 0;
    for (uint32_t i = 0; i < w->m; i++) {
        if (w->splits[i] > 0 && w->need[i] > 0) {
            w->quota[i] = (uint32_t)floor(total * (w->need[i] / sum));
            given += w->quota[i];
        }
    }
    while (given < total) { /* largest remainders first; each member once per round */
        uint32_t pick = UINT32_MAX;
        double pick_rem = -1;
        for (uint32_t i = 0; i < w->m; i++) {
            if (w->splits[i] == 0 || w->need[i] <= 0) {
                continue;
            }
            const double rem = total * (w->need[i] / sum) - w->quota[i];
            if (rem > pick_rem) {
                pick = i;
                pick_rem = rem;
            }
        }
        w->quota[pick]++;
        given++;
    }
}

/* A pseudo-random number in (0, 1) drawn from a position (splitmix64's finalizer). */
static double position_uniform(uint64_t pos, uint32_t draw) {
    uint64_t z = pos + UINT64_C(0x9E3779B97F4A7C15) * (draw + 1);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / ldexp(1.0, 53);
}

/* Chooses `chosen` of member i's arcs into w->pick[0..chosen): a length-biased random
 * sample (each arc's key is -ln(u) / length, smallest keys win: Efraimidis-Spirakis),
 * which is where hashed positions would land; u comes from the arc's end position, so
 * the choice is deterministic. Returns their total length as a share of the circle. */
static double work_choose(const alloc_work *w, uint32_t i, uint32_t chosen, uint32_t draw,
                          bool largest) {
    const alloc_arc *arcs = w->by_owner + w->start[i]; /* largest first: the first
                                                           `splits` have length >= 2 */
    const uint32_t cand = largest ? chosen : w->splits[i];
    for (uint32_t a = 0; a < cand; a++) {
        const double u = position_uniform(w->pos[arcs[a].point], draw);
        w->pick[a] =
            (alloc_pick){.cost = largest ? a : -log(u) / (double)arcs[a].len, .arc = arcs[a]};
    }
    qsort(w->pick, cand, sizeof(*w->pick), cmp_pick);
    double total = 0;
    for (uint32_t a = 0; a < chosen; a++) {
        total += ldexp((double)w->pick[a].arc.len, -64);
    }
    return total;
}

/* Step 4 for member i: writes quota_i tokens at out. */
static uint64_t *work_split(const alloc_work *w, uint32_t i, uint32_t draw, uint64_t *out) {
    const uint32_t k = w->quota[i];
    if (k == 0) {
        return out;
    }
    const uint32_t chosen = k < w->splits[i] ? k : w->splits[i];
    double total = work_choose(w, i, chosen, draw, false);
    if (w->need[i] > ALLOC_MAX_FRACTION * total) { /* small arcs drawn: take the largest */
        total = work_choose(w, i, chosen, draw, true);
    }
    const double fraction = fmin(1.0, w->need[i] / total);
    for (uint32_t a = 0; a < chosen; a++) {
        const uint64_t len = w->pick[a].arc.len;
        const uint32_t j = w->pick[a].arc.point;
        const uint64_t from = w->pos[j == 0 ? w->n - 1 : j - 1];
        const uint32_t many = k / chosen + (a < k % chosen); /* tokens in this arc, >= 1 */
        const double want = fraction * (double)len;
        uint64_t take = want < (double)(len - 1) ? (uint64_t)want : len - 1;
        take = take < many ? many : take;
        take = take < len - 1 ? take : len - 1; /* the arc has len - 1 free positions */
        const uint64_t step = take / many ? take / many : 1;
        for (uint32_t q = 1; q <= many; q++) { /* the last one ends the taken part */
            *out++ = from + take - (uint64_t)(many - q) * step;
        }
    }
    return out;
}

/* True when the sorted tokens are distinct and none is a point of the ring (both
 * sorted): what hashring_add_tokens and the ring's one-encoding rule need. */
static bool tokens_fit(const uint64_t *tokens, uint32_t count, const alloc_work *w) {
    uint32_t j = 0;
    for (uint32_t v = 0; v < count; v++) {
        if (v > 0 && tokens[v] == tokens[v - 1]) {
            return false;
        }
        while (j < w->n && w->pos[j] < tokens[v]) {
            j++;
        }
        if (j < w->n && w->pos[j] == tokens[v]) {
            return false;
        }
    }
    return true;
}

/* Draw `draw` into tokens (sorted): INTERNAL when they do not fit (see tokens_fit). */
static ps_status work_draw(alloc_work *w, uint32_t draw, uint64_t *tokens, uint32_t total) {
    uint64_t *out = tokens;
    for (uint32_t i = 0; i < w->m; i++) {
        out = work_split(w, i, draw, out);
    }
    qsort(tokens, total, sizeof(*tokens), cmp_u64);
    return tokens_fit(tokens, total, w) ? PS_STATUS_OK : PS_STATUS_INTERNAL;
}

/* How balanced the ring would be with the tokens: the worst peak/mean over r = 1..3
 * (*ret_score), then their sum (*ret_tie). */
static ps_status draw_score(const hashring *ring, const char *id, uint32_t weight,
                            const uint64_t *tokens, uint32_t total, double *ret_score,
                            double *ret_tie) {
    hashring *trial = NULL;
    ps_status st = hashring_clone(ring, &trial);
    if (st == PS_STATUS_OK) {
        st = hashring_add_tokens(trial, id, "trial:1", weight, tokens, total);
    }
    double score = 0, tie = 0;
    for (uint32_t r = 1; st == PS_STATUS_OK && r <= ALLOC_SCORE_REPLICAS; r++) {
        double peak_mean = 0;
        st = hashring_ownership(trial, r, NULL, &peak_mean);
        score = fmax(score, peak_mean);
        tie += peak_mean;
    }
    hashring_destroy(trial);
    *ret_score = score;
    *ret_tie = tie;
    return st;
}

/* Tokens for a non-empty ring: the best of the draws the budget allows. */
static ps_status alloc_drawn(const hashring *ring, const char *id, uint32_t weight,
                             uint64_t *tokens, uint32_t total) {
    alloc_work w = {0};
    uint64_t *trial = malloc((size_t)total * sizeof(*trial));
    ps_status st = trial ? work_load(ring, &w) : PS_STATUS_NO_MEMORY;
    if (st != PS_STATUS_OK) {
        goto out;
    }
    work_level(&w, weight);
    work_apportion(&w, total);
    const uint64_t points = (uint64_t)w.n + total;
    const uint64_t budget = ALLOC_DRAW_POINTS / points;
    const uint32_t draws = budget < 1 ? 1 : budget > ALLOC_DRAWS ? ALLOC_DRAWS : (uint32_t)budget;
    double best = INFINITY, best_tie = INFINITY;
    st = PS_STATUS_INTERNAL; /* until a draw fits */
    for (uint32_t d = 0; d < draws; d++) {
        if (work_draw(&w, d, trial, total) != PS_STATUS_OK) {
            continue;
        }
        double score = 0, tie = 0;
        ps_status sst =
            draws > 1 ? draw_score(ring, id, weight, trial, total, &score, &tie) : PS_STATUS_OK;
        if (sst == PS_STATUS_NO_MEMORY) {
            st = sst;
            goto out;
        }
        if (sst == PS_STATUS_OK && (score < best || (score == best && tie < best_tie))) {
            best = score;
            best_tie = tie;
            memcpy(tokens, trial, (size_t)total * sizeof(*tokens));
            st = PS_STATUS_OK;
        }
    }
out:
    work_free(&w);
    free(trial);
    return st;
}

ps_status hashring_alloc_tokens(const hashring *ring, const char *id, uint32_t weight,
                                uint64_t **ret_tokens, uint32_t *ret_count) {
    if (ring == NULL || id == NULL || ret_tokens == NULL || ret_count == NULL || weight == 0 ||
        *id == 0 || strnlen(id, HASHRING_ID_MAX + 1) > HASHRING_ID_MAX) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (hashring_find(ring, id, NULL)) {
        return PS_STATUS_ALREADY_EXISTS;
    }
    const uint64_t total = (uint64_t)weight * hashring_vnodes_per_weight(ring);
    if (hashring_node_count(ring) >= HASHRING_MAX_NODES ||
        hashring_point_count(ring) + total > HASHRING_MAX_POINTS) {
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    uint64_t *tokens = malloc((size_t)total * sizeof(*tokens));
    if (tokens == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st = PS_STATUS_OK;
    if (hashring_point_count(ring) > 0) {
        st = alloc_drawn(ring, id, weight, tokens, (uint32_t)total);
    } else {
        for (uint32_t v = 0; v < total; v++) {
            tokens[v] = hashring_vnode_hash(id, v);
        }
        qsort(tokens, (size_t)total, sizeof(*tokens), cmp_u64);
        for (uint32_t v = 1; v < total; v++) { /* odds of 2^-64 a pair */
            st = tokens[v] == tokens[v - 1] ? PS_STATUS_INTERNAL : st;
        }
    }
    if (st != PS_STATUS_OK) {
        free(tokens);
        return st;
    }
    *ret_tokens = tokens;
    *ret_count = (uint32_t)total;
    return PS_STATUS_OK;
}
