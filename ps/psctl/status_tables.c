/* status_tables.c: the sparse tables in `psctl status`: every live shard on the ring is
 * asked for its Health, whose per-table figures (rows, bytes) are added up per (model,
 * table), with the rows each shard holds; a shard whose request-id memory forgot
 * requests younger than 30 s gets a warning (a retry that late may apply twice). Also
 * psctl_shard_health, the one Health call psctl makes (ring add checks a shard with it too). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psctl.h"

ps_status psctl_shard_health(psctl *p, const char *addr, Ps__HealthResponse **ret_health,
                             rpc_result *res) {
    rpc_channel *ch = NULL;
    ps_status st = rpc_channel_create(addr, NULL, &ch);
    if (st != PS_STATUS_OK) {
        memset(res, 0, sizeof *res);
        res->grpc_code = 14; /* UNAVAILABLE */
        snprintf(res->details, sizeof res->details, "cannot open a channel: %s", ps_status_str(st));
        return st;
    }
    Ps__HealthRequest req = PS__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_call_opts opts = {.timeout_ms = p->timeout_ms};
    st = rpc_call(ch, "/ps.ParameterServer/Health", &req.base, &ps__health_response__descriptor,
                  &opts, &resp, res);
    rpc_channel_destroy(ch);
    if (st == PS_STATUS_OK)
        *ret_health = (Ps__HealthResponse *)resp;
    return st;
}

/* Every table's figures, keyed "model/table", as a JSON object:
 * {"model/table": {"model", "table", "dim", "rows", "bytes", "shards": {id: rows}}}. */
static json_t *collect(psctl *p, const Ps__Ring *ring) {
    json_t *all = json_object();
    for (size_t i = 0; all && ring && i < ring->n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        if (n->role != PS__NODE_ROLE__ROLE_SHARD || !n->alive || !n->in_ring)
            continue;
        Ps__HealthResponse *h = NULL;
        rpc_result res;
        if (psctl_shard_health(p, n->addr, &h, &res) != PS_STATUS_OK) {
            psctl_warn(p, "shard %s did not answer Health (%s): its tables are not counted", n->id,
                       res.details);
            continue;
        }
        if (h->dedup_forgotten_young > 0)
            psctl_warn(p,
                       "shard %s remembers the request ids of pushes for the last %.1f s only "
                       "(%llu keys; %llu requests forgotten younger than 30 s): a push retried "
                       "later than that may be applied twice; raise its --dedup-mb",
                       n->id, (double)h->dedup_window_ms / 1000.0,
                       (unsigned long long)h->dedup_max_keys,
                       (unsigned long long)h->dedup_forgotten_young);
        for (size_t t = 0; t < h->n_tables; t++) {
            const Ps__TableStats *ts = h->tables[t];
            char name[600];
            snprintf(name, sizeof name, "%s/%s", ts->model, ts->table);
            json_t *e = json_object_get(all, name);
            if (!e) {
                e = json_pack("{s:s, s:s, s:I, s:I, s:I, s:{}}", "model", ts->model, "table",
                              ts->table, "dim", (json_int_t)ts->dim, "rows", (json_int_t)0, "bytes",
                              (json_int_t)0, "shards");
                json_object_set_new(all, name, e);
            }
            if (!e)
                continue;
            json_object_set_new(e, "rows",
                                json_integer(json_integer_value(json_object_get(e, "rows")) +
                                             (json_int_t)ts->rows));
            json_object_set_new(e, "bytes",
                                json_integer(json_integer_value(json_object_get(e, "bytes")) +
                                             (json_int_t)ts->bytes));
            json_object_set_new(json_object_get(e, "shards"), n->id,
                                json_integer((json_int_t)ts->rows));
        }
        protobuf_c_message_free_unpacked(&h->base, NULL);
    }
    return all;
}

json_t *psctl_tables_json(psctl *p, const Ps__Ring *ring) {
    json_t *all = collect(p, ring), *list = json_array();
    const char *key;
    json_t *v;
    json_object_foreach(all, key, v) json_array_append(list, v);
    json_decref(all);
    return list;
}

void psctl_tables_print(psctl *p, const Ps__Ring *ring) {
    json_t *all = collect(p, ring);
    if (!all || json_object_size(all) == 0) {
        json_decref(all);
        return;
    }
    static const char *const header[] = {"TABLE", "DIM", "ROWS", "BYTES", "ROWS PER SHARD"};
    psctl_table *t = psctl_table_create(5, header);
    const char *key;
    json_t *e;
    json_object_foreach(all, key, e) {
        char dim[16], rows[32], bytes[32], per[512] = "";
        snprintf(dim, sizeof dim, "%lld", (long long)json_integer_value(json_object_get(e, "dim")));
        snprintf(rows, sizeof rows, "%lld",
                 (long long)json_integer_value(json_object_get(e, "rows")));
        psctl_bytes_str((uint64_t)json_integer_value(json_object_get(e, "bytes")), bytes,
                        sizeof bytes);
        const char *id;
        json_t *r;
        size_t used = 0;
        json_object_foreach(json_object_get(e, "shards"), id, r) {
            if (used < sizeof per)
                used += (size_t)snprintf(per + used, sizeof per - used, "%s%s=%lld",
                                         used ? " " : "", id, (long long)json_integer_value(r));
        }
        const char *row[] = {key, dim, rows, bytes, per};
        psctl_table_add(t, row);
    }
    printf("\n");
    psctl_table_print(t, stdout);
    psctl_table_destroy(t);
    json_decref(all);
}
