/* membership.c: the coordinator's node table and liveness (see membership.h). */
#include "membership.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct membership {
    membership_node *nodes; /* max_nodes entries, the first n used */
    size_t n;
    size_t max_nodes;
    int heartbeat_ms;
};

ps_status membership_create(const membership_opts *opts, membership **ret_members) {
    size_t max = opts && opts->max_nodes ? opts->max_nodes : MEMBERSHIP_DEFAULT_MAX_NODES;
    if (!opts || opts->heartbeat_ms <= 0 || max > MEMBERSHIP_MAX_NODES_LIMIT)
        return PS_STATUS_INVALID_ARGUMENT;
    membership *m = calloc(1, sizeof *m);
    if (!m)
        return PS_STATUS_NO_MEMORY;
    m->nodes = calloc(max, sizeof *m->nodes);
    if (!m->nodes) {
        free(m);
        return PS_STATUS_NO_MEMORY;
    }
    m->max_nodes = max;
    m->heartbeat_ms = opts->heartbeat_ms;
    *ret_members = m;
    return PS_STATUS_OK;
}

void membership_destroy(membership *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->nodes[i].tokens);
    free(m->nodes);
    free(m);
}

bool membership_id_valid(const char *id) {
    if (!id || !*id || strnlen(id, MEMBERSHIP_ID_MAX + 1) > MEMBERSHIP_ID_MAX)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            return false;
    return true;
}

/* HOST:PORT where HOST is a name or IPv4 address (letters, digits, '.', '-', '_') or a
 * bracketed IPv6 address, and PORT 1..65535 in plain decimal: what ends up in logs,
 * the state file and every client's channel, so nothing else (no spaces, newlines,
 * signs or leading zeros) gets in. */
uint64_t membership_model_ref(const char *name, uint64_t version) {
    char buf[512]; /* model names are far shorter (registry.h); longer ones are cut */
    size_t len = strnlen(name, sizeof buf - 9);
    memcpy(buf, name, len);
    buf[len] = '\0';
    for (int i = 0; i < 8; i++)
        buf[len + 1 + i] = (char)(version >> (8 * i));
    return hashring_hash(buf, len + 9);
}

bool membership_serving(const membership *m, uint64_t ref, const char **ret_id) {
    for (size_t i = 0; i < m->n; i++) {
        const membership_node *n = &m->nodes[i];
        if (!n->alive)
            continue;
        for (uint32_t k = 0; k < n->n_serving; k++) {
            if (n->serving[k] == ref) {
                if (ret_id)
                    *ret_id = n->id;
                return true;
            }
        }
    }
    return false;
}

bool membership_addr_valid(const char *addr) {
    if (!addr || strnlen(addr, MEMBERSHIP_ADDR_MAX + 1) > MEMBERSHIP_ADDR_MAX)
        return false;
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return false;
    size_t host_len = (size_t)(colon - addr);
    bool v6 = addr[0] == '[';
    if (v6 && (host_len < 3 || addr[host_len - 1] != ']'))
        return false;
    for (size_t i = v6 ? 1 : 0; i < (v6 ? host_len - 1 : host_len); i++) {
        char ch = addr[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_' ||
                  (v6 && ch == ':');
        if (!ok)
            return false;
    }
    const char *port_text = colon + 1;
    uint64_t port;
    return port_text[0] >= '1' && port_text[0] <= '9' && ps_parse_u64(port_text, &port) &&
           port < 65536;
}

const char *membership_role_name(membership_role role) {
    return role == MEMBERSHIP_ROLE_SHARD ? "shard" : "replica";
}

size_t membership_node_count(const membership *m) {
    return m->n;
}

size_t membership_node_limit(const membership *m) {
    return m->max_nodes;
}

membership_node *membership_node_at(membership *m, size_t i) {
    return i < m->n ? &m->nodes[i] : NULL;
}

const membership_node *membership_node_at_const(const membership *m, size_t i) {
    return i < m->n ? &m->nodes[i] : NULL;
}

membership_node *membership_node_find(membership *m, const char *id) {
    if (!id)
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->nodes[i].id, id) == 0)
            return &m->nodes[i];
    return NULL;
}

ps_status membership_node_add(membership *m, const char *id, const char *addr, membership_role role,
                              uint32_t weight, membership_node **ret_node) {
    if (!membership_id_valid(id) || !membership_addr_valid(addr) ||
        (role != MEMBERSHIP_ROLE_SHARD && role != MEMBERSHIP_ROLE_SERVE) || weight == 0 ||
        weight > MEMBERSHIP_MAX_WEIGHT)
        return PS_STATUS_INVALID_ARGUMENT;
    if (membership_node_find(m, id))
        return PS_STATUS_ALREADY_EXISTS;
    if (m->n == m->max_nodes)
        return PS_STATUS_RESOURCE_EXHAUSTED;
    membership_node *n = &m->nodes[m->n++];
    memset(n, 0, sizeof *n);
    snprintf(n->id, sizeof n->id, "%s", id);
    snprintf(n->addr, sizeof n->addr, "%s", addr);
    n->role = role;
    n->weight = weight;
    if (ret_node)
        *ret_node = n;
    return PS_STATUS_OK;
}

ps_status membership_node_remove(membership *m, const char *id) {
    membership_node *n = membership_node_find(m, id);
    if (!n)
        return PS_STATUS_NOT_FOUND;
    size_t idx = (size_t)(n - m->nodes);
    free(n->tokens);
    memmove(&m->nodes[idx], &m->nodes[idx + 1], (m->n - idx - 1) * sizeof m->nodes[0]);
    m->n--;
    return PS_STATUS_OK;
}

void membership_node_tokens_set(membership_node *n, uint64_t *tokens, uint32_t n_tokens) {
    free(n->tokens);
    n->tokens = tokens;
    n->n_tokens = tokens ? n_tokens : 0;
}

bool membership_node_touch(membership_node *n, int64_t now_ms) {
    bool revived = !n->alive;
    n->alive = true;
    n->last_hb_ms = now_ms;
    return revived;
}

size_t membership_liveness_sweep(membership *m, int64_t now_ms,
                                 void (*died)(void *arg, const membership_node *node,
                                              int64_t silent_ms),
                                 void *arg) {
    const int64_t limit = (int64_t)MEMBERSHIP_DEAD_AFTER_BEATS * m->heartbeat_ms;
    size_t count = 0;
    for (size_t i = 0; i < m->n; i++) {
        membership_node *n = &m->nodes[i];
        int64_t silent = now_ms - n->last_hb_ms;
        if (!n->alive || silent <= limit)
            continue;
        n->alive = false;
        count++;
        if (died)
            died(arg, n, silent);
    }
    return count;
}

size_t membership_ring_count(const membership *m) {
    size_t count = 0;
    for (size_t i = 0; i < m->n; i++)
        count += m->nodes[i].role == MEMBERSHIP_ROLE_SHARD && m->nodes[i].in_ring;
    return count;
}

membership_node *membership_changing(membership *m) {
    for (size_t i = 0; i < m->n; i++)
        if (m->nodes[i].joining || m->nodes[i].draining)
            return &m->nodes[i];
    return NULL;
}

void membership_sync_count(const membership *m, uint64_t pending_epoch, membership_sync *ret) {
    membership_sync s = {0};
    for (size_t i = 0; i < m->n; i++) {
        const membership_node *n = &m->nodes[i];
        if (n->role != MEMBERSHIP_ROLE_SHARD || !n->in_ring)
            continue;
        s.shards++;
        if (n->synced_epoch >= pending_epoch)
            s.synced++;
        else if (!s.first_behind)
            s.first_behind = n;
    }
    *ret = s;
}
