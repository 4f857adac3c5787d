/* coord_models.c: model registry operations on the coordinator context: register a
 * version, list, get, watch, and the status snapshot (see coord.h). Validation runs
 * before the lock is taken; messages handed out are copies made after it is released. */
#include "coord_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train_config.h"
#include "util.h"

ps_status coord_model_register(coord_ctx *c, const Ps__ModelInfo *in, uint64_t *ret_version,
                               char *err, size_t err_len) {
    ps_status st = in && in->n_tensors <= REGISTRY_MAX_TENSORS
                       ? registry_model_check_text(in, err, err_len)
                       : PS_STATUS_OK; /* a bad count: validate says so */
    if (st == PS_STATUS_OK)
        st = registry_model_validate(in, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    Ps__ModelInfo *copy = NULL;
    if ((st = registry_model_copy(in, &copy)) != PS_STATUS_OK) {
        ps_set_err(err, err_len, "out of memory");
        return st;
    }
    uint64_t version = 0;
    pthread_mutex_lock(&c->lock);
    /* the publish numbers are the coordinator's, not the uploader's: a re-upload of a
     * version keeps its own, a new version starts with none (before, a client's
     * published of 2^63 or more was stored and the state file no longer loaded) */
    const Ps__ModelInfo *old =
        in->version ? registry_model_find(c->models, in->name, in->version) : NULL;
    copy->published = old ? old->published : 0;
    copy->publishing = old ? old->publishing : 0;
    st = registry_model_put(c->models, copy, &version, err, err_len);
    if (st != PS_STATUS_OK) {
        pthread_mutex_unlock(&c->lock);
        ps__model_info__free_unpacked(copy, NULL);
        return st;
    }
    pthread_cond_broadcast(&c->changed);
    coord_event(c, COORD_EVENT_INFO, "model %s version %llu registered (%zu tensors)", copy->name,
                (unsigned long long)version, copy->n_tensors);
    coord_unlock_and_persist(c);
    *ret_version = version;
    return PS_STATUS_OK;
}

/* The models (every version, or the latest of each) as a malloc'd pointer array for a
 * message's repeated field (lock held). */
static ps_status collect_locked(coord_ctx *c, bool served_only, Ps__ModelInfo ***ret_list,
                                size_t *ret_n) {
    const Ps__ModelInfo **list = malloc((registry_model_count(c->models) + 1) * sizeof *list);
    if (!list)
        return PS_STATUS_NO_MEMORY;
    *ret_n = registry_models_collect(c->models, served_only, list);
    *ret_list = (Ps__ModelInfo **)list; /* only read: the message is packed, not changed */
    return PS_STATUS_OK;
}

ps_status coord_models_list(coord_ctx *c, Ps__ListModelsResponse **ret_list) {
    Ps__ListModelsResponse resp = PS__LIST_MODELS_RESPONSE__INIT;
    uint8_t *buf = NULL;
    size_t len = 0;
    pthread_mutex_lock(&c->lock);
    ps_status st = collect_locked(c, false, &resp.models, &resp.n_models);
    if (st == PS_STATUS_OK) {
        st = coord_message_pack(&resp.base, &buf, &len);
        free(resp.models);
    }
    pthread_mutex_unlock(&c->lock);
    if (st != PS_STATUS_OK)
        return st;
    return coord_message_unpack(&ps__list_models_response__descriptor, buf, len,
                                (ProtobufCMessage **)ret_list);
}

ps_status coord_model_get(coord_ctx *c, const char *name, uint64_t version,
                          Ps__ModelInfo **ret_model, char *err, size_t err_len) {
    uint8_t *buf = NULL;
    size_t len = 0;
    ps_status st = PS_STATUS_OK;
    pthread_mutex_lock(&c->lock);
    const Ps__ModelInfo *m = registry_model_find(c->models, name, version);
    if (m)
        st = coord_message_pack(&m->base, &buf, &len);
    pthread_mutex_unlock(&c->lock);
    if (!m) {
        if (version)
            ps_set_err(err, err_len, "no model %.80s version %llu", name ? name : "",
                       (unsigned long long)version);
        else
            ps_set_err(err, err_len, "no model %.80s", name ? name : "");
        return PS_STATUS_NOT_FOUND;
    }
    if (st != PS_STATUS_OK)
        return st;
    return coord_message_unpack(&ps__model_info__descriptor, buf, len,
                                (ProtobufCMessage **)ret_model);
}

ps_status coord_model_delete(coord_ctx *c, const char *name, uint64_t version, bool force,
                             Ps__ModelInfo **ret_model, char *err, size_t err_len) {
    if (!name || !*name || version == 0) {
        ps_set_err(err, err_len, "say which model and which version to delete");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    pthread_mutex_lock(&c->lock);
    const char *by = NULL;
    if (!registry_model_find(c->models, name, version)) {
        pthread_mutex_unlock(&c->lock);
        ps_set_err(err, err_len, "no model %.80s version %llu", name, (unsigned long long)version);
        return PS_STATUS_NOT_FOUND;
    }
    const Ps__ModelInfo *latest = registry_model_find(c->models, name, 0);
    if (!force && latest && latest->version == version) {
        /* replicas move to a model's latest version, perhaps before their next heartbeat
         * says so: the latest is never deleted without force */
        ps_set_err(err, err_len,
                   "model %.80s version %llu is its latest version, which replicas serve: "
                   "register a newer version first (replicas move to it), or force the delete",
                   name, (unsigned long long)version);
        pthread_mutex_unlock(&c->lock);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    if (!force && membership_serving(c->members, membership_model_ref(name, version), &by)) {
        ps_set_err(err, err_len,
                   "model %.80s version %llu is served by replica %s: register a newer version "
                   "first (replicas move to it), or force the delete",
                   name, (unsigned long long)version, by);
        pthread_mutex_unlock(&c->lock);
        return PS_STATUS_FAILED_PRECONDITION;
    }
    Ps__ModelInfo *m = NULL;
    ps_status st = registry_model_take(c->models, name, version, &m);
    if (st != PS_STATUS_OK) { /* found above, under the same lock */
        pthread_mutex_unlock(&c->lock);
        return PS_STATUS_INTERNAL;
    }
    pthread_cond_broadcast(&c->changed);
    coord_event(c, COORD_EVENT_INFO, "model %s version %llu deleted%s", m->name,
                (unsigned long long)version, force ? " (forced)" : "");
    coord_unlock_and_persist(c);
    *ret_model = m;
    return PS_STATUS_OK;
}

/* The config text with req's edits applied, one field after the other (malloc'd). */
static ps_status edit_config(const char *text, const Ps__SetOptimizerRequest *req, char **ret_text,
                             char *err, size_t err_len) {
    bool is_table = req->table && *req->table;
    const char *target = is_table ? req->table : (req->tensor && *req->tensor ? req->tensor : NULL);
    const char *kind = req->type && *req->type ? req->type : NULL;
    char *cur = strdup(text);
    if (!cur)
        return PS_STATUS_NO_MEMORY;
    ps_status st = PS_STATUS_OK;
    for (size_t i = 0; st == PS_STATUS_OK && (i < req->n_fields || (i == 0 && kind)); i++) {
        char *next = NULL;
        st = train_config_set(cur, strlen(cur), target, is_table, i == 0 ? kind : NULL,
                              i < req->n_fields ? req->fields[i] : NULL,
                              i < req->n_fields ? req->values[i] : 0, &next, err, err_len);
        if (st == PS_STATUS_OK) {
            free(cur);
            cur = next;
        }
    }
    if (st != PS_STATUS_OK) {
        free(cur);
        return st;
    }
    *ret_text = cur;
    return PS_STATUS_OK;
}

/* The tensor a SetOptimizer names must be one of the model's (a table is looked up in
 * its config by train_config_set). */
static ps_status check_target(const Ps__ModelInfo *m, const Ps__SetOptimizerRequest *req, char *err,
                              size_t err_len) {
    if (!req->tensor || !*req->tensor)
        return PS_STATUS_OK;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i]->name, req->tensor) == 0)
            return PS_STATUS_OK;
    ps_set_err(err, err_len, "model %s version %llu has no tensor %.80s", m->name,
               (unsigned long long)m->version, req->tensor);
    return PS_STATUS_NOT_FOUND;
}

ps_status coord_model_set_optimizer(coord_ctx *c, const Ps__SetOptimizerRequest *req,
                                    Ps__ModelInfo **ret_model, char *err, size_t err_len) {
    if (!req->model || !*req->model) {
        ps_set_err(err, err_len, "say which model's optimizer to change");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (req->n_fields != req->n_values || req->n_fields > COORD_MAX_OPTIMIZER_FIELDS ||
        (req->n_fields == 0 && !(req->type && *req->type))) {
        ps_set_err(err, err_len,
                   "give a type and/or 1 to %d hyper-parameters, each with one value (%zu fields, "
                   "%zu values)",
                   COORD_MAX_OPTIMIZER_FIELDS, req->n_fields, req->n_values);
        return PS_STATUS_INVALID_ARGUMENT;
    }
    if (req->tensor && *req->tensor && req->table && *req->table) {
        ps_set_err(err, err_len, "name a tensor or a table, not both");
        return PS_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < req->n_values; i++)
        if (!isfinite(req->values[i])) {
            ps_set_err(err, err_len, "hyper-parameter %.64s is %s: give a finite number",
                       req->fields[i] ? req->fields[i] : "",
                       isnan(req->values[i]) ? "NaN" : "infinite");
            return PS_STATUS_INVALID_ARGUMENT;
        }
    pthread_mutex_lock(&c->lock);
    const Ps__ModelInfo *m = registry_model_find(c->models, req->model, req->version);
    Ps__ModelInfo *copy = NULL;
    char *text = NULL;
    ps_status st = PS_STATUS_NOT_FOUND;
    if (!m)
        ps_set_err(err, err_len, "no model %.80s version %llu", req->model,
                   (unsigned long long)req->version);
    else if ((st = check_target(m, req, err, err_len)) == PS_STATUS_OK &&
             (st = edit_config(m->config_json, req, &text, err, err_len)) == PS_STATUS_OK &&
             (st = registry_model_copy(m, &copy)) == PS_STATUS_OK) {
        free(copy->config_json); /* protobuf-c unpacks with malloc; so does jansson */
        copy->config_json = text;
        text = NULL;
        uint64_t version = 0;
        /* the edited model must be one RegisterModel would take (before, an edit could
         * grow config.json past its limit, and the next start refused the state file) */
        if ((st = registry_model_validate(copy, err, err_len)) == PS_STATUS_OK)
            st = registry_model_put(c->models, copy, &version, err, err_len);
    }
    free(text);
    if (st != PS_STATUS_OK) {
        pthread_mutex_unlock(&c->lock);
        if (copy)
            ps__model_info__free_unpacked(copy, NULL);
        if (st == PS_STATUS_NO_MEMORY)
            ps_set_err(err, err_len, "out of memory");
        return st;
    }
    pthread_cond_broadcast(&c->changed);
    coord_event(c, COORD_EVENT_INFO, "model %s version %llu: optimizer of %s%s changed", copy->name,
                (unsigned long long)copy->version,
                req->table && *req->table     ? "table "
                : req->tensor && *req->tensor ? "tensor "
                                              : "",
                req->table && *req->table     ? req->table
                : req->tensor && *req->tensor ? req->tensor
                                              : "the model (default)");
    uint8_t *buf = NULL;
    size_t len = 0;
    st = coord_message_pack(&copy->base, &buf, &len); /* copy belongs to the registry now */
    coord_unlock_and_persist(c);
    if (st != PS_STATUS_OK)
        return st;
    return coord_message_unpack(&ps__model_info__descriptor, buf, len,
                                (ProtobufCMessage **)ret_model);
}

static uint64_t current_generation(coord_ctx *c) {
    return registry_generation(c->models);
}

ps_status coord_models_wait_packed(coord_ctx *c, uint64_t after_generation, coord_alive_fn alive,
                                   void *arg, coord_packed **ret_packed, uint64_t *ret_generation) {
    pthread_mutex_lock(&c->lock);
    ps_status st = coord_wait_locked(c, current_generation, after_generation, alive, arg);
    const uint64_t gen = registry_generation(c->models);
    if (st == PS_STATUS_OK && c->models_packed && c->models_gen == gen) {
        *ret_packed = coord_packed_ref(c->models_packed);
    } else if (st == PS_STATUS_OK) { /* packed once for every watcher of this generation */
        Ps__ModelsUpdate up = PS__MODELS_UPDATE__INIT;
        coord_packed *p = NULL;
        if ((st = collect_locked(c, true, &up.models, &up.n_models)) == PS_STATUS_OK) {
            up.generation = gen;
            p = coord_packed_make(&up.base);
            free(up.models);
        }
        if (p) {
            *ret_packed = coord_packed_cache(&c->models_packed, p);
            c->models_gen = gen;
        } else {
            st = PS_STATUS_NO_MEMORY;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (st == PS_STATUS_OK)
        *ret_generation = gen;
    return st;
}

ps_status coord_models_wait(coord_ctx *c, uint64_t after_generation, coord_alive_fn alive,
                            void *arg, Ps__ModelsUpdate **ret_update) {
    coord_packed *p = NULL;
    uint64_t gen;
    ps_status st = coord_models_wait_packed(c, after_generation, alive, arg, &p, &gen);
    if (st != PS_STATUS_OK)
        return st;
    *ret_update = (Ps__ModelsUpdate *)coord_packed_unpack(&ps__models_update__descriptor, p);
    coord_packed_unref(p);
    return *ret_update ? PS_STATUS_OK : PS_STATUS_NO_MEMORY;
}

ps_status coord_status_get(coord_ctx *c, Ps__StatusResponse **ret_status) {
    Ps__StatusResponse resp = PS__STATUS_RESPONSE__INIT;
    Ps__Ring ring;
    coord_ring_parts parts;
    uint8_t *buf = NULL;
    size_t len = 0;
    pthread_mutex_lock(&c->lock);
    ps_status st = coord_ring_fill_locked(c, &ring, &parts);
    if (st == PS_STATUS_OK) {
        resp.ring = &ring;
        st = collect_locked(c, false, &resp.models, &resp.n_models);
        if (st == PS_STATUS_OK) {
            st = coord_message_pack(&resp.base, &buf, &len);
            free(resp.models);
        }
        coord_ring_fill_free(&parts);
    }
    pthread_mutex_unlock(&c->lock);
    if (st != PS_STATUS_OK)
        return st;
    return coord_message_unpack(&ps__status_response__descriptor, buf, len,
                                (ProtobufCMessage **)ret_status);
}
