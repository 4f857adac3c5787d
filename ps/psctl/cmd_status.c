/* cmd_status.c: `psctl status`: the cluster as the coordinator sees it, and whether
 * every model's data can actually be reached.
 *
 * Nodes come from the coordinator (liveness from heartbeats, keys as last reported);
 * that alone can look healthy while chunks are lost (a shard restarted empty, a
 * shard removed by force). So for the latest version of each model psctl also asks
 * the owning shards, with Stat, whether they hold each chunk at its full length, and
 * shows chunks reachable out of total; anything short of all is a warning line that
 * names the first reason (and `unreachable` in the JSON). Stat moves no values: a
 * status of a large model costs 12 bytes a chunk.
 */
#include <stdlib.h>
#include <string.h>

#include "ring_cmd.h"
#include "util.h"

#define STAT_BATCH 65536u /* chunk keys per Stat round (the client splits by shard) */

static const char status_help[] =
    "usage: psctl status\n"
    "The cluster as the coordinator sees it: ring epoch; every node (shards and serving\n"
    "replicas) with its role, address, liveness, time since its last heartbeat, keys\n"
    "held and last update sequence number; every model with its versions, and for its\n"
    "latest version the chunks the shards can serve out of its total (asked of the\n"
    "shards themselves; a warning names why any is unreachable); the sparse tables with\n"
    "their rows and bytes, in all and per shard (asked of the live shards; a warning names\n"
    "a shard that forgot the request ids of pushes younger than 30 s: raise its\n"
    "--dedup-mb); and the ring change in progress (`ring add` of a loaded ring, `ring\n"
    "drain`): which shard joins or drains, the pending epoch, and per shard of the ring\n"
    "whether it has synced (copied every key it is primary for to the owners the pending\n"
    "ring gives it) with, from its Health, its replication targets still syncing, the\n"
    "bytes queued for them and the image bytes its syncs sent since it started (bytes\n"
    "left are not known yet).\n"
    "JSON: {\"coordinator\", \"epoch\", \"replication\", \"nodes\": [{\"id\", \"role\", \"addr\",\n"
    "\"weight\", \"in_ring\", \"waiting\", \"alive\", \"keys\", \"seq\", \"last_heartbeat_ms\"}],\n"
    "\"models\": [{\"name\", \"versions\": [..], \"latest\", \"tensors\", \"parameters\",\n"
    "\"chunks\", \"reachable\", \"unreachable\" (why, or null)}], \"tables\": [{\"model\",\n"
    "\"table\", \"dim\", \"rows\", \"bytes\", \"shards\": {id: rows}}], \"change\": null or\n"
    "{\"kind\": \"join\"|\"drain\", \"node\", \"addr\", \"epoch\", \"pending_epoch\", \"synced\",\n"
    "\"shards\", \"per_shard\": [{\"id\", \"alive\", \"synced\", \"synced_epoch\", \"targets\",\n"
    "\"syncing\", \"queued_bytes\", \"sync_bytes\"}]}} (nodes also carry \"joining\",\n"
    "\"draining\", \"synced_epoch\")\n";

static int status_run(psctl *p, int argc, char **argv);

static const psctl_cmd status_cmd = {"status", "cluster status", status_help, status_run};

int psctl_cmd_status(psctl *p, int argc, char **argv) {
    return status_run(p, argc, argv);
}

/* One model as the status shows it. */
typedef struct model_row {
    const Ps__ModelInfo *latest;
    char versions[256]; /* "1,2,3" */
    json_t *version_list;
    uint64_t parameters;
    uint64_t chunks, reachable;
    char why[512]; /* "" when every chunk is reachable */
} model_row;

/* Chunks of the model's tensors that their shards hold at full length. */
static void count_reachable(psctl *p, model_row *r) {
    const Ps__ModelInfo *m = r->latest;
    for (size_t t = 0; t < m->n_tensors; t++)
        r->chunks += m->tensors[t]->chunks;
    if (r->chunks == 0)
        return;
    if (psctl_client(p) != PSCTL_EXIT_OK) {
        snprintf(r->why, sizeof r->why, "no data client (see the message above)");
        return;
    }
    uint64_t *keys = malloc(STAT_BATCH * sizeof *keys);
    uint32_t *want = malloc(STAT_BATCH * sizeof *want), *held = malloc(STAT_BATCH * sizeof *held);
    if (!keys || !want || !held) {
        snprintf(r->why, sizeof r->why, "out of memory");
        goto out;
    }
    for (size_t t = 0; t < m->n_tensors; t++) {
        const Ps__TensorInfo *ti = m->tensors[t];
        uint64_t count = ps_tensor_count(ti);
        for (uint32_t first = 0; first < ti->chunks; first += STAT_BATCH) {
            uint32_t n = ti->chunks - first < STAT_BATCH ? ti->chunks - first : STAT_BATCH;
            for (uint32_t i = 0; i < n; i++) {
                uint64_t start = (uint64_t)(first + i) * ti->chunk_floats;
                keys[i] = ps_key_dense(m->name, m->version, ti->name, first + i);
                want[i] =
                    (uint32_t)(count - start < ti->chunk_floats ? count - start : ti->chunk_floats);
            }
            ps_status st = ps_client_stat(p->client, n, keys, held, NULL);
            if (st != PS_STATUS_OK && !r->why[0])
                snprintf(r->why, sizeof r->why, "%s", ps_client_error(p->client));
            for (uint32_t i = 0; i < n; i++) {
                if (held[i] == want[i]) {
                    r->reachable++;
                } else if (!r->why[0]) {
                    snprintf(r->why, sizeof r->why, "%s/%s#%u: %s", m->name, ti->name, first + i,
                             held[i] ? "held at another length" : "no shard holds it");
                }
            }
        }
    }
out:
    free(keys);
    free(want);
    free(held);
}

/* The models' rows: one per name, for its latest version. Returns how many. */
static size_t model_rows(psctl *p, const Ps__StatusResponse *s, model_row *rows) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_models; i++) {
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(s->models[k]->name, s->models[i]->name) == 0;
        if (seen)
            continue;
        model_row *r = &rows[n++];
        memset(r, 0, sizeof *r);
        r->latest = s->models[i];
        r->version_list = json_array();
        size_t used = 0;
        for (size_t k = i; k < s->n_models; k++) {
            const Ps__ModelInfo *m = s->models[k];
            if (strcmp(m->name, s->models[i]->name) != 0)
                continue;
            json_array_append_new(r->version_list, json_integer((json_int_t)m->version));
            if (used < sizeof r->versions)
                used += (size_t)snprintf(r->versions + used, sizeof r->versions - used, "%s%llu",
                                         used ? "," : "", (unsigned long long)m->version);
            if (m->version > r->latest->version)
                r->latest = m;
        }
        for (size_t t = 0; t < r->latest->n_tensors; t++)
            r->parameters += ps_tensor_count(r->latest->tensors[t]);
        count_reachable(p, r);
    }
    return n;
}

static int print_json(psctl *p, const Ps__StatusResponse *s, model_row *rows, size_t n_rows) {
    const Ps__Ring *ring = s->ring;
    json_t *nodes = json_array(), *models = json_array();
    for (size_t i = 0; ring && i < ring->n_nodes; i++)
        json_array_append_new(nodes, psctl_node_json(ring->nodes[i]));
    for (size_t i = 0; i < n_rows; i++) {
        model_row *r = &rows[i];
        json_array_append_new(
            models, json_pack("{s:s, s:O, s:I, s:I, s:I, s:I, s:I, s:o}", "name", r->latest->name,
                              "versions", r->version_list, "latest", (json_int_t)r->latest->version,
                              "tensors", (json_int_t)r->latest->n_tensors, "parameters",
                              (json_int_t)r->parameters, "chunks", (json_int_t)r->chunks,
                              "reachable", (json_int_t)r->reachable, "unreachable",
                              r->why[0] ? json_string(r->why) : json_null()));
    }
    return psctl_emit_json(p, json_pack("{s:s, s:I, s:I, s:o, s:o, s:o, s:o}", "coordinator",
                                        p->coordinator, "epoch",
                                        (json_int_t)(ring ? ring->epoch : 0), "replication",
                                        (json_int_t)(ring ? ring->replication : 0), "nodes", nodes,
                                        "models", models, "tables", psctl_tables_json(p, ring),
                                        "change", psctl_ring_change_json(p, ring, true)));
}

static void print_nodes(const Ps__Ring *ring) {
    size_t n_nodes = ring ? ring->n_nodes : 0;
    size_t shards = 0, shards_alive = 0, replicas = 0, replicas_alive = 0;
    for (size_t i = 0; i < n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        bool shard = n->role == PS__NODE_ROLE__ROLE_SHARD;
        shards += shard;
        shards_alive += shard && n->alive;
        replicas += !shard;
        replicas_alive += !shard && n->alive;
    }
    printf("%zu shards (%zu alive), %zu serving replicas (%zu alive)\n", shards, shards_alive,
           replicas, replicas_alive);
    if (!n_nodes)
        return;
    static const char *const header[] = {"ID",   "ROLE", "ADDRESS", "ALIVE", "LAST HEARTBEAT",
                                         "KEYS", "SEQ",  "IN_RING"};
    psctl_table *t = psctl_table_create(8, header);
    for (size_t i = 0; i < n_nodes; i++) {
        const Ps__NodeInfo *n = ring->nodes[i];
        char age[32], keys[32], seq[32];
        snprintf(keys, sizeof keys, "%llu", (unsigned long long)n->keys);
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)n->seq);
        const char *in_ring = n->role != PS__NODE_ROLE__ROLE_SHARD ? "-"
                              : n->draining                        ? "DRAINING"
                              : n->in_ring                         ? "yes"
                              : n->joining                         ? "JOINING"
                              : n->waiting                         ? "WAITING"
                                                                   : "no";
        const char *row[] = {n->id,
                             psctl_role_name(n->role),
                             n->addr,
                             n->alive ? "yes" : "NO",
                             psctl_heartbeat_age(n, age, sizeof age),
                             keys,
                             seq,
                             in_ring};
        psctl_table_add(t, row);
    }
    printf("\n");
    psctl_table_print(t, stdout);
    psctl_table_destroy(t);
}

static void print_models(const model_row *rows, size_t n_rows) {
    if (n_rows == 0) {
        printf("no models registered\n");
        return;
    }
    static const char *const header[] = {"MODEL",   "VERSIONS",   "LATEST",
                                         "TENSORS", "PARAMETERS", "CHUNKS REACHABLE"};
    psctl_table *t = psctl_table_create(6, header);
    for (size_t i = 0; i < n_rows; i++) {
        const model_row *r = &rows[i];
        char latest[32], tensors[32], params[32], chunks[64];
        snprintf(latest, sizeof latest, "%llu", (unsigned long long)r->latest->version);
        snprintf(tensors, sizeof tensors, "%zu", r->latest->n_tensors);
        snprintf(params, sizeof params, "%llu", (unsigned long long)r->parameters);
        snprintf(chunks, sizeof chunks, "%llu/%llu%s", (unsigned long long)r->reachable,
                 (unsigned long long)r->chunks, r->reachable < r->chunks ? "  UNREACHABLE" : "");
        const char *row[] = {r->latest->name, r->versions, latest, tensors, params, chunks};
        psctl_table_add(t, row);
    }
    psctl_table_print(t, stdout);
    psctl_table_destroy(t);
    for (size_t i = 0; i < n_rows; i++)
        if (rows[i].reachable < rows[i].chunks)
            printf("WARNING: model %s version %llu: %llu of %llu chunks cannot be served: %s\n",
                   rows[i].latest->name, (unsigned long long)rows[i].latest->version,
                   (unsigned long long)(rows[i].chunks - rows[i].reachable),
                   (unsigned long long)rows[i].chunks, rows[i].why);
}

static int status_run(psctl *p, int argc, char **argv) {
    int first = 0;
    int rc = psctl_parse(p, &status_cmd, argc, argv, NULL, NULL, NULL, &first);
    if (rc == PSCTL_HELP_SHOWN)
        return PSCTL_EXIT_OK;
    if (rc != PSCTL_EXIT_OK || (rc = psctl_no_positionals(p, argc, argv, first)) != PSCTL_EXIT_OK)
        return rc;
    Ps__StatusRequest req = PS__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rc = psctl_coord_call(p, "/ps.Coordinator/Status", &req.base, &ps__status_response__descriptor,
                          &resp, "get the cluster status");
    if (rc != PSCTL_EXIT_OK)
        return rc;
    const Ps__StatusResponse *s = (const Ps__StatusResponse *)resp;
    psctl_nodes_sort(s->ring);
    model_row *rows = calloc(s->n_models + 1, sizeof *rows);
    if (!rows) {
        protobuf_c_message_free_unpacked(resp, NULL);
        return psctl_fail(p, "NO_MEMORY", "out of memory for %zu models", s->n_models);
    }
    size_t n_rows = model_rows(p, s, rows);
    if (p->json) {
        rc = print_json(p, s, rows, n_rows);
    } else {
        printf("coordinator %s: ring epoch %llu, replication %u\n", p->coordinator,
               (unsigned long long)(s->ring ? s->ring->epoch : 0),
               s->ring ? s->ring->replication : 0);
        print_nodes(s->ring);
        psctl_ring_change_print(p, s->ring, true);
        printf("\n");
        print_models(rows, n_rows);
        psctl_tables_print(p, s->ring);
    }
    for (size_t i = 0; i < n_rows; i++)
        json_decref(rows[i].version_list);
    free(rows);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}
