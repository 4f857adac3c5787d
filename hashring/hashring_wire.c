/* hashring_wire.c: the ring's serialized form (hashring.h documents the layout), which
 * travels in the coordinator's Ring message to every shard, replica and client.
 *
 * Why two versions: version 1 (no tokens) is what every ring of hashed positions still
 * writes, byte for byte, so processes that only know version 1 (and the Python client,
 * psclient/ring.py) keep working with such rings. Version 2 adds each member's
 * explicit tokens and is written only when some member has them. Each ring has exactly
 * one encoding: a version 2 ring without any tokens is refused, as are tokens out of
 * order, so parse(serialize(r)) and serialize(parse(b)) are both identities.
 */
#include "hashring_internal.h"

#include <stdlib.h>
#include <string.h>

#define WIRE_MAGIC "PSRG"
#define WIRE_VERSION_HASHED 1u /* members without tokens */
#define WIRE_VERSION_TOKENS 2u /* a tokens flag (and the tokens) after each member */
#define WIRE_TOKENS_NONE 0u    /* the flag: hashed positions */
#define WIRE_TOKENS_LISTED 1u  /* the flag: a u32 count and that many tokens follow */
#define WIRE_HEADER_LEN (4 + 4 + 8 + 4 + 4)
#define WIRE_MEMBER_MIN_LEN (4 + 2 + 1 + 2 + 1) /* weight, id_len, 1-byte id, addr_len, ... */
#define WIRE_TOKEN_LEN 8

/* ------------------------------------------------------------------------------------ */
/* Writing */

static unsigned char *put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)(v & 0xff);
    p[1] = (unsigned char)(v >> 8);
    return p + 2;
}

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    for (int k = 0; k < 4; k++) {
        p[k] = (unsigned char)((v >> (8 * k)) & 0xff);
    }
    return p + 4;
}

static unsigned char *put_u64(unsigned char *p, uint64_t v) {
    for (int k = 0; k < 8; k++) {
        p[k] = (unsigned char)((v >> (8 * k)) & 0xff);
    }
    return p + 8;
}

ps_status hashring_serialize(const hashring *ring, void *buf, size_t cap, size_t *ret_len) {
    if (ring == NULL || ret_len == NULL) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    const bool tokens = hashring_has_tokens(ring);
    size_t need = WIRE_HEADER_LEN;
    for (uint32_t i = 0; i < ring->count; i++) {
        const hashring_member *m = &ring->members[i];
        need += 4 + 2 + m->id_len + 2 + m->addr_len;
        if (tokens) {
            need += 1;
            if (m->tokens != NULL) {
                need += 4 + (size_t)m->n_tokens * WIRE_TOKEN_LEN;
            }
        }
    }
    *ret_len = need;
    if (buf == NULL || cap < need) {
        return PS_STATUS_RESOURCE_EXHAUSTED;
    }
    unsigned char *p = buf;
    memcpy(p, WIRE_MAGIC, 4);
    p += 4;
    p = put_u32(p, tokens ? WIRE_VERSION_TOKENS : WIRE_VERSION_HASHED);
    p = put_u64(p, ring->epoch);
    p = put_u32(p, ring->vnodes_per_weight);
    p = put_u32(p, ring->count);
    for (uint32_t i = 0; i < ring->count; i++) {
        const hashring_member *m = &ring->members[i];
        p = put_u32(p, m->weight);
        p = put_u16(p, (uint16_t)m->id_len);
        memcpy(p, m->id, m->id_len);
        p += m->id_len;
        p = put_u16(p, (uint16_t)m->addr_len);
        memcpy(p, m->addr, m->addr_len);
        p += m->addr_len;
        if (!tokens) {
            continue;
        }
        *p++ = m->tokens != NULL ? WIRE_TOKENS_LISTED : WIRE_TOKENS_NONE;
        if (m->tokens != NULL) {
            p = put_u32(p, m->n_tokens);
        }
        for (uint32_t t = 0; t < m->n_tokens; t++) {
            p = put_u64(p, m->tokens[t]);
        }
    }
    return PS_STATUS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Reading */

/* A bounds-checked little-endian reader: every get fails instead of reading past end. */
typedef struct wire_reader {
    const unsigned char *p;
    size_t left;
} wire_reader;

static bool get_bytes(wire_reader *r, void *out, size_t len) {
    if (r->left < len) {
        return false;
    }
    memcpy(out, r->p, len);
    r->p += len;
    r->left -= len;
    return true;
}

static bool get_uint(wire_reader *r, size_t width, uint64_t *ret_v) {
    unsigned char b[8];
    if (!get_bytes(r, b, width)) {
        return false;
    }
    uint64_t v = 0;
    for (size_t k = width; k-- > 0;) {
        v = (v << 8) | b[k];
    }
    *ret_v = v;
    return true;
}

/* A length-prefixed (u16) string of 1..max bytes without NUL, copied NUL-terminated. */
static bool get_string(wire_reader *r, size_t max, char *out, uint32_t *ret_len) {
    uint64_t len;
    if (!get_uint(r, 2, &len) || len == 0 || len > max || !get_bytes(r, out, len)) {
        return false;
    }
    if (memchr(out, 0, len) != NULL) {
        return false;
    }
    out[len] = 0;
    *ret_len = (uint32_t)len;
    return true;
}

/* A member's tokens flag and tokens (version 2): a count of 1..HASHRING_MAX_POINTS and
 * that many strictly ascending u64 into a new array at m->tokens, or none. PARSE for a
 * bad flag or count, short input or disorder. */
static ps_status get_tokens(wire_reader *r, hashring_member *m) {
    uint64_t flag, n;
    if (!get_uint(r, 1, &flag) || (flag != WIRE_TOKENS_NONE && flag != WIRE_TOKENS_LISTED)) {
        return PS_STATUS_PARSE;
    }
    if (flag == WIRE_TOKENS_NONE) {
        return PS_STATUS_OK;
    }
    if (!get_uint(r, 4, &n) || n == 0 || n > HASHRING_MAX_POINTS ||
        r->left / WIRE_TOKEN_LEN < n) { /* before allocating anything for them */
        return PS_STATUS_PARSE;
    }
    m->tokens = malloc((size_t)n * sizeof(*m->tokens));
    if (m->tokens == NULL) {
        return PS_STATUS_NO_MEMORY;
    }
    m->n_tokens = (uint32_t)n;
    for (uint32_t t = 0; t < n; t++) {
        get_uint(r, WIRE_TOKEN_LEN, &m->tokens[t]); /* cannot fail: length checked */
        if (t > 0 && m->tokens[t] <= m->tokens[t - 1]) {
            return PS_STATUS_PARSE;
        }
    }
    return PS_STATUS_OK;
}

ps_status hashring_parse(const void *buf, size_t len, hashring **ret_ring) {
    if (ret_ring == NULL || (buf == NULL && len > 0)) {
        return PS_STATUS_INVALID_ARGUMENT;
    }
    wire_reader r = {.p = buf, .left = len};
    char magic[4];
    uint64_t version, epoch, vpw, count;
    if (!get_bytes(&r, magic, 4) || memcmp(magic, WIRE_MAGIC, 4) != 0 ||
        !get_uint(&r, 4, &version) ||
        (version != WIRE_VERSION_HASHED && version != WIRE_VERSION_TOKENS) ||
        !get_uint(&r, 8, &epoch) || !get_uint(&r, 4, &vpw) || vpw == 0 ||
        vpw > HASHRING_MAX_POINTS || !get_uint(&r, 4, &count) || count > HASHRING_MAX_NODES ||
        count > r.left / WIRE_MEMBER_MIN_LEN) {
        return PS_STATUS_PARSE;
    }

    hashring *ring = NULL;
    ps_status st = hashring_create((uint32_t)vpw, &ring);
    if (st != PS_STATUS_OK) {
        return st;
    }
    st = hashring_reserve(ring, (uint32_t)count);
    if (st != PS_STATUS_OK) {
        goto fail_ring;
    }
    uint64_t points = 0;
    for (uint32_t i = 0; i < count; i++) {
        st = PS_STATUS_PARSE;
        hashring_member *m = &ring->members[i];
        uint64_t weight;
        memset(m, 0, sizeof(*m));
        if (!get_uint(&r, 4, &weight) || weight == 0 ||
            !get_string(&r, HASHRING_ID_MAX, m->id, &m->id_len) ||
            !get_string(&r, HASHRING_ADDR_MAX, m->addr, &m->addr_len)) {
            goto fail_ring;
        }
        m->weight = (uint32_t)weight;
        /* index order is id order: strictly increasing, which also rules out duplicates */
        if (i > 0 && strcmp(ring->members[i - 1].id, m->id) >= 0) {
            goto fail_ring;
        }
        ring->count = i + 1; /* from here hashring_destroy frees this member's tokens */
        if (version == WIRE_VERSION_TOKENS && (st = get_tokens(&r, m)) != PS_STATUS_OK) {
            goto fail_ring;
        }
        st = PS_STATUS_PARSE;
        points += hashring_member_points(m, (uint32_t)vpw);
        if (points > HASHRING_MAX_POINTS) {
            goto fail_ring;
        }
    }
    st = PS_STATUS_PARSE;
    if (r.left != 0) { /* trailing bytes */
        goto fail_ring;
    }
    if (version == WIRE_VERSION_TOKENS && !hashring_has_tokens(ring)) { /* not canonical */
        goto fail_ring;
    }
    st = hashring_rebuild(ring);
    if (st != PS_STATUS_OK) {
        goto fail_ring;
    }
    ring->epoch = epoch;
    *ret_ring = ring;
    return PS_STATUS_OK;

fail_ring:
    hashring_destroy(ring);
    return st;
}
