/* state_store.c: the state file's encoding, its ordered atomic writes, and reading it
 * (see state_store.h; the strict decoder is in state_decode.c). */
#include "state_store.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "util.h"

struct state_store {
    char *path;
    state_store_write_fn write;
    void *write_arg;
    pthread_mutex_t write_lock; /* one write at a time */
    uint64_t written_seq;       /* the newest snapshot written (under write_lock) */
};

static ps_status default_write(void *arg, const char *path, const void *data, size_t len) {
    (void)arg;
    return ps_write_file_atomic(path, data, len);
}

ps_status state_store_create(const state_store_opts *opts, state_store **ret_store) {
    if (!opts || !opts->path || !*opts->path ||
        strnlen(opts->path, STATE_STORE_PATH_MAX + 1) > STATE_STORE_PATH_MAX)
        return PS_STATUS_INVALID_ARGUMENT;
    state_store *s = calloc(1, sizeof *s);
    if (!s)
        return PS_STATUS_NO_MEMORY;
    s->path = strdup(opts->path);
    if (!s->path) {
        free(s);
        return PS_STATUS_NO_MEMORY;
    }
    s->write = opts->write ? opts->write : default_write;
    s->write_arg = opts->write_arg;
    pthread_mutex_init(&s->write_lock, NULL);
    *ret_store = s;
    return PS_STATUS_OK;
}

void state_store_destroy(state_store *s) {
    if (!s)
        return;
    pthread_mutex_destroy(&s->write_lock);
    free(s->path);
    free(s);
}

const char *state_store_path(const state_store *s) {
    return s->path;
}

/* ----------------------------------------------------------------- encoding --- */

/* Appends `value` (consumed) to `array`; false when either is NULL or it fails. */
static bool append(json_t *array, json_t *value) {
    return value && json_array_append_new(array, value) == 0;
}

static json_t *model_json(const Ps__ModelInfo *m) {
    json_t *tensors = json_array();
    for (size_t i = 0; tensors && i < m->n_tensors; i++) {
        const Ps__TensorInfo *t = m->tensors[i];
        json_t *shape = json_array();
        for (size_t k = 0; shape && k < t->n_shape; k++)
            if (!append(shape, json_integer(t->shape[k]))) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *jt = shape ? json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "dtype",
                                       t->dtype, "shape", shape, "chunk_floats",
                                       (json_int_t)t->chunk_floats, "chunks", (json_int_t)t->chunks)
                           : NULL;
        if (!append(tensors, jt)) {
            json_decref(tensors);
            return NULL;
        }
    }
    if (!tensors)
        return NULL;
    /* a publish in progress (publishing) is not kept: a restart abandons it */
    return json_pack("{s:s, s:I, s:s, s:o, s:I}", "name", m->name, "version",
                     (json_int_t)m->version, "config_json", m->config_json, "tensors", tensors,
                     "published", (json_int_t)m->published);
}

/* A node's tokens as one string of STATE_STORE_TOKEN_HEX hex digits each (compact: one
 * line for a shard's thousand tokens, where an array would take a thousand). */
static json_t *tokens_json(const membership_node *n) {
    size_t len = (size_t)n->n_tokens * STATE_STORE_TOKEN_HEX;
    char *hex = malloc(len + 1);
    if (!hex)
        return NULL;
    for (uint32_t t = 0; t < n->n_tokens; t++)
        snprintf(hex + (size_t)t * STATE_STORE_TOKEN_HEX, STATE_STORE_TOKEN_HEX + 1, "%016llx",
                 (unsigned long long)n->tokens[t]);
    json_t *s = json_stringn(hex, len);
    free(hex);
    return s;
}

static json_t *nodes_json(const membership *members) {
    json_t *nodes = json_array();
    for (size_t i = 0; nodes && i < membership_node_count(members); i++) {
        const membership_node *n = membership_node_at_const(members, i);
        json_t *jn = json_pack("{s:s, s:s, s:I, s:s, s:b, s:b}", "id", n->id, "addr", n->addr,
                               "weight", (json_int_t)n->weight, "role",
                               n->role == MEMBERSHIP_ROLE_SHARD ? "shard" : "serve", "in_ring",
                               n->in_ring, "waiting", n->waiting);
        if (jn && n->tokens && json_object_set_new(jn, "tokens", tokens_json(n)) != 0) {
            json_decref(jn);
            jn = NULL;
        }
        /* only while a change is in progress, so other files stay as older versions wrote */
        if (jn && ((n->joining && json_object_set_new(jn, "joining", json_true()) != 0) ||
                   (n->draining && json_object_set_new(jn, "draining", json_true()) != 0))) {
            json_decref(jn);
            jn = NULL;
        }
        if (!append(nodes, jn)) {
            json_decref(nodes);
            return NULL;
        }
    }
    return nodes;
}

static json_t *models_json(const registry *reg) {
    size_t n = registry_model_count(reg);
    const Ps__ModelInfo **list = malloc((n ? n : 1) * sizeof *list);
    json_t *models = list ? json_array() : NULL;
    n = list ? registry_models_collect(reg, false, list) : 0;
    for (size_t i = 0; models && i < n; i++)
        if (!append(models, model_json(list[i]))) {
            json_decref(models);
            models = NULL;
        }
    free(list);
    return models;
}

/* {"name": version} of the marks above their name's versions (registry.h); NULL when
 * there are none (the key is left out: the file stays what older builds wrote) or on
 * no memory (*ret_failed). */
static json_t *marks_json(const registry *reg, bool *ret_failed) {
    size_t n = registry_mark_count(reg);
    const char **names = malloc((n ? n : 1) * sizeof *names);
    uint64_t *versions = malloc((n ? n : 1) * sizeof *versions);
    json_t *marks = names && versions ? json_object() : NULL;
    n = marks ? registry_marks_collect(reg, names, versions) : 0;
    for (size_t i = 0; marks && i < n; i++)
        if (json_object_set_new(marks, names[i], json_integer((json_int_t)versions[i])) != 0) {
            json_decref(marks);
            marks = NULL;
        }
    *ret_failed = !marks;
    free(names);
    free(versions);
    if (marks && n == 0) {
        json_decref(marks);
        marks = NULL;
    }
    return marks;
}

ps_status state_store_encode(const membership *members, const ring_state *ring, const registry *reg,
                             char **ret_text) {
    json_t *nodes = nodes_json(members);
    json_t *models = nodes ? models_json(reg) : NULL;
    if (!models) {
        json_decref(nodes);
        return PS_STATUS_NO_MEMORY;
    }
    int format = STATE_STORE_FORMAT_HASHED;
    for (size_t i = 0; i < membership_node_count(members); i++)
        if (membership_node_at_const(members, i)->tokens)
            format = STATE_STORE_FORMAT;
    bool failed = false;
    json_t *marks = marks_json(reg, &failed);
    json_t *root =
        failed ? NULL
               : json_pack("{s:i, s:I, s:I, s:o, s:o}", "format", format, "epoch",
                           (json_int_t)ring_state_epoch(ring), "model_generation",
                           (json_int_t)registry_generation(reg), "nodes", nodes, "models", models);
    if (failed) {
        json_decref(nodes);
        json_decref(models);
    }
    if (root && marks && json_object_set_new(root, "version_marks", marks) != 0) {
        json_decref(root);
        root = NULL;
    } else if (!root) {
        json_decref(marks);
    }
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text)
        return PS_STATUS_NO_MEMORY;
    *ret_text = text;
    return PS_STATUS_OK;
}

/* ----------------------------------------------------------------- writing --- */

ps_status state_store_write(state_store *s, uint64_t seq, const char *text, bool *ret_written) {
    ps_status st = PS_STATUS_OK;
    bool written = false;
    pthread_mutex_lock(&s->write_lock);
    if (seq > s->written_seq) {
        st = s->write(s->write_arg, s->path, text, strlen(text));
        if (st == PS_STATUS_OK) {
            s->written_seq = seq;
            written = true;
        }
    }
    pthread_mutex_unlock(&s->write_lock);
    if (st == PS_STATUS_OK && ret_written)
        *ret_written = written;
    return st;
}

/* ----------------------------------------------------------------- loading --- */

/* Removes what writes cut short by a crash left beside the file: ps_write_file_atomic
 * writes PATH.tmp.PID and renames it over PATH, so a kill between the two leaves the
 * temporary file (the state file itself is whole). Each restart would add one more. */
static void remove_torn_writes(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char dir[STATE_STORE_PATH_MAX + 1];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + 1 : 1, slash ? path : ".");
    size_t base_len = strlen(base);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strncmp(name, base, base_len) != 0 || strncmp(name + base_len, ".tmp.", 5) != 0)
            continue;
        const char *pid = name + base_len + 5;
        if (!*pid || strspn(pid, "0123456789") != strlen(pid))
            continue; /* not a name ps_write_file_atomic makes */
        char torn[2 * STATE_STORE_PATH_MAX + 2];
        snprintf(torn, sizeof torn, "%s%s", slash ? dir : "", name);
        unlink(torn);
    }
    closedir(d);
}

ps_status state_store_load(const state_store *s, membership *members, ring_state *ring,
                           registry *reg, char *err, size_t err_len) {
    remove_torn_writes(s->path);
    struct stat sb;
    if (stat(s->path, &sb) == 0 && sb.st_size > (off_t)STATE_STORE_MAX_BYTES) {
        ps_set_err(err, err_len,
                   "state file %s is %lld bytes, over the %u-byte limit: it is not a state file "
                   "this coordinator wrote; move it away to start an empty cluster",
                   s->path, (long long)sb.st_size, STATE_STORE_MAX_BYTES);
        return PS_STATUS_PARSE;
    }
    char *text = NULL;
    size_t len = 0;
    ps_status st = ps_read_file(s->path, &text, &len);
    if (st == PS_STATUS_NOT_FOUND)
        return PS_STATUS_OK; /* a new cluster */
    if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len, "cannot read state file %s: %s (check its permissions)", s->path,
                   ps_status_str(st));
        return st;
    }
    char what[1024];
    st = state_store_decode(text, len, members, ring, reg, what, sizeof what);
    free(text);
    if (st == PS_STATUS_NO_MEMORY) {
        ps_set_err(err, err_len, "out of memory loading state file %s", s->path);
    } else if (st != PS_STATUS_OK) {
        ps_set_err(err, err_len,
                   "state file %s is damaged: %s. It holds the cluster's membership, ring epoch "
                   "and model registry: restore it from a backup, or move it away to start an "
                   "empty cluster (nodes then register again and models must be uploaded again)",
                   s->path, what);
        st = PS_STATUS_PARSE;
    }
    return st;
}
