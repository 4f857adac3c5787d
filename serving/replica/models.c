/* models.c: see models.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "models.h"
#include "train_config.h"
#include "util.h"

struct models {
    pthread_mutex_t lock;
    served **list;   /* listed versions, each with the list's reference */
    uint64_t *bytes; /* parameter bytes of each listed version, beside list */
    size_t n, cap;
    uint64_t bytes_listed, max_bytes;
    served_rows rows;         /* given to every model version */
    kernels_backend *backend; /* every version computes on it (NULL: a CPU one each) */
    char **expect_names;      /* what the registry last said should be served */
    uint64_t *expect_versions;
    size_t n_expect;
};

ps_status models_create(const models_opts *opts, models **ret_models) {
    size_t cap = opts && opts->max_listed ? opts->max_listed : MODELS_DEFAULT_MAX_LISTED;
    models *m = calloc(1, sizeof *m);
    served **list = calloc(cap, sizeof *list);
    uint64_t *bytes = calloc(cap, sizeof *bytes);
    if (!m || !list || !bytes) {
        free(m);
        free(list);
        free(bytes);
        return PS_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->list = list;
    m->bytes = bytes;
    m->cap = cap;
    m->max_bytes = opts ? opts->max_bytes : 0;
    if (opts) {
        m->rows = opts->rows;
        m->backend = opts->backend;
    }
    *ret_models = m;
    return PS_STATUS_OK;
}

static void free_expect(char **names, size_t n, uint64_t *versions) {
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(versions);
}

void models_destroy(models *m) {
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        served_release(m->list[i]);
    free(m->list);
    free(m->bytes);
    free_expect(m->expect_names, m->n_expect, m->expect_versions);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The listed versions with a reference each; free with release_all. NULL (and 0) when
 * out of memory. */
static served **snapshot(models *m, size_t *ret_n) {
    pthread_mutex_lock(&m->lock);
    served **out = malloc((m->n + 1) * sizeof *out);
    size_t n = 0;
    for (size_t i = 0; out && i < m->n; i++) {
        served_retain(m->list[i]);
        out[n++] = m->list[i];
    }
    pthread_mutex_unlock(&m->lock);
    *ret_n = n;
    return out;
}

static void release_all(served **list, size_t n) {
    for (size_t i = 0; i < n; i++)
        served_release(list[i]);
    free(list);
}

/* Removes s from the list (lock held); drops the list's reference. */
static void unlist(models *m, served *s) {
    for (size_t i = 0; i < m->n; i++) {
        if (m->list[i] == s) {
            m->bytes_listed -= m->bytes[i];
            m->n--;
            m->list[i] = m->list[m->n];
            m->bytes[i] = m->bytes[m->n];
            served_release(s);
            return;
        }
    }
}

/* Parameter bytes a registry entry asks for (UINT64_MAX when that overflows). */
static uint64_t entry_bytes(const Ps__ModelInfo *info) {
    uint64_t total = 0;
    for (size_t i = 0; i < info->n_tensors; i++) {
        uint64_t count = 1;
        for (size_t k = 0; k < info->tensors[i]->n_shape; k++) {
            int64_t d = info->tensors[i]->shape[k];
            if (d < 0 || __builtin_mul_overflow(count, (uint64_t)d, &count))
                return UINT64_MAX;
        }
        if (__builtin_mul_overflow(count, 4u, &count) ||
            __builtin_add_overflow(total, count, &total))
            return UINT64_MAX;
    }
    return total;
}

/* Refuses a load the memory quota cannot take (lock held). */
static ps_status check_quota(const models *m, const Ps__ModelInfo *info, uint64_t need, char *err,
                             size_t err_len) {
    if (!m->max_bytes || (need <= m->max_bytes && m->bytes_listed <= m->max_bytes - need))
        return PS_STATUS_OK;
    ps_set_err(err, err_len,
               "model %s version %llu needs %llu MiB of parameters; this replica holds %llu MiB "
               "of its %llu MiB (--max-model-mb): not loaded",
               info->name, (unsigned long long)info->version,
               (unsigned long long)(need == UINT64_MAX ? need : need >> 20),
               (unsigned long long)(m->bytes_listed >> 20),
               (unsigned long long)(m->max_bytes >> 20));
    return PS_STATUS_RESOURCE_EXHAUSTED;
}

/* Propagation of a registry entry: consistent (its config says so) or streaming. */
static bool entry_consistent(const Ps__ModelInfo *info) {
    const char *json = info->config_json ? info->config_json : "";
    train_config *tc = NULL;
    if (train_config_parse(json, strlen(json), &tc, NULL, 0) != PS_STATUS_OK)
        return false; /* served_create says what is wrong */
    bool c = train_config_propagation(tc) == TRAIN_PROPAGATION_CONSISTENT;
    train_config_destroy(tc);
    return c;
}

/* The listed instance of name/version holding cut `publish` (lock held), or NULL. */
static served *find_listed(models *m, const char *name, uint64_t version, uint64_t publish) {
    for (size_t i = 0; i < m->n; i++) {
        served *s = m->list[i];
        if (served_version(s) == version && served_publish(s) == publish &&
            strcmp(served_name(s), name) == 0)
            return s;
    }
    return NULL;
}

/* True when the registry lists this version to be served (lock held). */
static bool expected_locked(const models *m, const served *s) {
    for (size_t i = 0; i < m->n_expect; i++)
        if (m->expect_versions[i] == served_version(s) &&
            strcmp(m->expect_names[i], served_name(s)) == 0)
            return true;
    return false;
}

/* s is ready: older versions of its model retire unless the registry still lists them
 * (a version policy of several), older cuts of its version retire, and so do prepared
 * cuts the registry no longer wants (lock held). */
static void retire_for(models *m, served *s, uint64_t publishing) {
    for (size_t i = 0; i < m->n;) {
        served *o = m->list[i];
        bool same = o != s && strcmp(served_name(o), served_name(s)) == 0;
        bool older =
            (served_version(o) < served_version(s) && !expected_locked(m, o)) ||
            (served_version(o) == served_version(s) && served_publish(o) < served_publish(s));
        bool abandoned = served_version(o) == served_version(s) && !served_ready(o) &&
                         served_publish(o) > served_publish(s) && served_publish(o) != publishing;
        if (same && (older || abandoned))
            unlist(m, o);
        else
            i++;
    }
}

/* Consistent propagation, with the cut already listed: a prepared cut the registry now
 * says is published becomes ready (the switch), atomically for requests. */
static ps_status commit_listed(models *m, served *have, const Ps__ModelInfo *info) {
    if (!served_ready(have) && !info->publishing)
        served_ready_set(have);
    if (served_ready(have))
        retire_for(m, have, info->publishing);
    return PS_STATUS_OK;
}

ps_status models_load(models *m, const Ps__ModelInfo *info, const served_source *src, char *err,
                      size_t err_len) {
    bool consistent = entry_consistent(info);
    uint64_t publish = !consistent ? 0 : info->publishing ? info->publishing : info->published;
    pthread_mutex_lock(&m->lock);
    served *have = find_listed(m, info->name, info->version, publish);
    if (have && (served_ready(have) || consistent)) {
        ps_status st = consistent ? commit_listed(m, have, info) : PS_STATUS_OK;
        pthread_mutex_unlock(&m->lock);
        return st; /* ready, or a cut prepared before: nothing to pull */
    }
    pthread_mutex_unlock(&m->lock);
    uint64_t need = entry_bytes(info);
    pthread_mutex_lock(&m->lock); /* before allocating anything for it */
    ps_status st = check_quota(m, info, need, err, err_len);
    pthread_mutex_unlock(&m->lock);
    if (st != PS_STATUS_OK)
        return st;
    served *s = NULL;
    st = served_create(info, &m->rows, m->backend, &s, err, err_len);
    if (st != PS_STATUS_OK)
        return st;
    pthread_mutex_lock(&m->lock); /* list it first: updates that race with the pull reach it */
    if (m->n == m->cap || (st = check_quota(m, info, need, err, err_len)) != PS_STATUS_OK) {
        pthread_mutex_unlock(&m->lock);
        served_release(s);
        if (st == PS_STATUS_OK) {
            ps_set_err(err, err_len, "already %zu model versions listed", m->cap);
            st = PS_STATUS_RESOURCE_EXHAUSTED;
        }
        return st;
    }
    m->bytes[m->n] = need;
    m->bytes_listed += need;
    m->list[m->n++] = s;
    served_retain(s); /* ours, while loading */
    pthread_mutex_unlock(&m->lock);

    size_t left = 0;
    st = served_pull(s, src, true, &left, err, err_len);
    if (st == PS_STATUS_OK && left > 0) /* updates announced during the pull */
        st = served_pull(s, src, false, &left, err, err_len);
    if (st == PS_STATUS_OK && left > 0) {
        ps_set_err(err, err_len, "%zu chunks still behind after pulling again", left);
        st = PS_STATUS_UNAVAILABLE;
    }
    pthread_mutex_lock(&m->lock);
    if (st != PS_STATUS_OK) {
        unlist(m, s);
    } else if (!(consistent && info->publishing)) {
        served_ready_set(s); /* a cut being published waits for its commit instead */
        retire_for(m, s, 0);
    }
    pthread_mutex_unlock(&m->lock);
    served_release(s);
    return st;
}

void models_update_apply(models *m, const Ps__Update *u) {
    size_t n = 0;
    served **list = snapshot(m, &n);
    for (size_t i = 0; i < n; i++)
        served_update_apply(list[i], u);
    release_all(list, n);
}

size_t models_repull_mark(models *m, bool (*pred)(uint64_t key, void *arg), void *arg) {
    size_t n = 0, marked = 0;
    served **list = snapshot(m, &n);
    for (size_t i = 0; i < n; i++)
        marked += served_repull_mark(list[i], pred, arg);
    release_all(list, n);
    return marked;
}

ps_status models_stale_fix(models *m, const served_source *src, size_t *ret_left, char *err,
                           size_t err_len) {
    size_t n = 0, left = 0;
    served **list = snapshot(m, &n);
    if (!list) {
        ps_set_err(err, err_len, "out of memory");
        return PS_STATUS_NO_MEMORY;
    }
    ps_status st = PS_STATUS_OK;
    for (size_t i = 0; i < n && st == PS_STATUS_OK; i++) {
        size_t l = 0;
        st = served_pull(list[i], src, false, &l, err, err_len);
        left += l;
    }
    release_all(list, n);
    if (st == PS_STATUS_OK && ret_left)
        *ret_left = left;
    return st;
}

ps_status models_expect(models *m, size_t n, const char *const *names, const uint64_t *versions) {
    char **nn = calloc(n + 1, sizeof *nn);
    uint64_t *vv = calloc(n + 1, sizeof *vv);
    if (!nn || !vv)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        nn[i] = strdup(names[i]);
        if (!nn[i])
            goto fail;
        vv[i] = versions[i];
    }
    pthread_mutex_lock(&m->lock);
    char **old_names = m->expect_names;
    uint64_t *old_versions = m->expect_versions;
    size_t old_n = m->n_expect;
    m->expect_names = nn;
    m->expect_versions = vv;
    m->n_expect = n;
    pthread_mutex_unlock(&m->lock);
    free_expect(old_names, old_n, old_versions);
    return PS_STATUS_OK;
fail:
    free_expect(nn, n, vv);
    return PS_STATUS_NO_MEMORY;
}

bool models_ready(models *m) {
    pthread_mutex_lock(&m->lock);
    bool ok = true;
    for (size_t i = 0; ok && i < m->n_expect; i++) {
        bool found = false;
        for (size_t k = 0; k < m->n && !found; k++)
            found = strcmp(served_name(m->list[k]), m->expect_names[i]) == 0 &&
                    served_version(m->list[k]) >= m->expect_versions[i] && served_ready(m->list[k]);
        ok = found;
    }
    pthread_mutex_unlock(&m->lock);
    return ok;
}

served *models_acquire(models *m, const char *name, uint64_t version) {
    pthread_mutex_lock(&m->lock);
    served *best = NULL;
    for (size_t i = 0; i < m->n; i++) {
        served *s = m->list[i];
        if (!served_ready(s) || strcmp(served_name(s), name) != 0 ||
            (version && served_version(s) != version))
            continue;
        if (!best || served_version(s) > served_version(best) ||
            (served_version(s) == served_version(best) &&
             served_publish(s) > served_publish(best))) /* the newest cut */
            best = s;
    }
    if (best)
        served_retain(best);
    pthread_mutex_unlock(&m->lock);
    return best;
}

void models_names_list(models *m, char *buf, size_t cap) {
    size_t used = 0;
    if (cap == 0)
        return;
    buf[0] = '\0';
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n && used + 1 < cap; i++) {
        if (!served_ready(m->list[i]))
            continue;
        int w = snprintf(buf + used, cap - used, "%s%s v%llu", used ? "," : "",
                         served_name(m->list[i]), (unsigned long long)served_version(m->list[i]));
        if (w < 0 || (size_t)w >= cap - used) {
            buf[used] = '\0';
            break;
        }
        used += (size_t)w;
    }
    pthread_mutex_unlock(&m->lock);
    if (!used)
        snprintf(buf, cap, "none");
}

size_t models_ready_refs(models *m, models_ref *ret_refs, size_t cap) {
    size_t n = 0;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n && n < cap; i++) {
        if (!served_ready(m->list[i]))
            continue;
        snprintf(ret_refs[n].name, sizeof ret_refs[n].name, "%s", served_name(m->list[i]));
        ret_refs[n].version = served_version(m->list[i]);
        n++;
    }
    pthread_mutex_unlock(&m->lock);
    return n;
}
