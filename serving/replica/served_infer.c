/* served_infer.c: forward passes on a served model, the check of their outputs, and
 * the model's statistics. See served.h. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <pthread.h>

#include "served_internal.h"
#include "util.h"

/* The first non-finite element of an output, or false. */
static bool find_nonfinite(const model_output *o, uint64_t *ret_index) {
    uint64_t count = 1;
    for (uint32_t k = 0; k < o->ndims; k++)
        count *= (uint64_t)o->dims[k];
    for (uint64_t i = 0; i < count; i++) {
        if (!isfinite(o->data[i])) {
            *ret_index = i;
            return true;
        }
    }
    return false;
}

static model_workspace *workspace_get(served *s) {
    model_workspace *ws = NULL;
    pthread_mutex_lock(&s->ws_lock);
    if (s->n_idle_ws > 0)
        ws = s->idle_ws[--s->n_idle_ws];
    pthread_mutex_unlock(&s->ws_lock);
    if (!ws && model_workspace_create(s->m, &ws) != PS_STATUS_OK)
        ws = NULL; /* infer then allocates scratch for this call alone */
    return ws;
}

static void workspace_put(served *s, model_workspace *ws) {
    if (!ws)
        return;
    pthread_mutex_lock(&s->ws_lock);
    if (s->n_idle_ws < SERVED_MAX_IDLE_WORKSPACES) {
        s->idle_ws[s->n_idle_ws++] = ws;
        ws = NULL;
    }
    pthread_mutex_unlock(&s->ws_lock);
    model_workspace_destroy(ws);
}

ps_status served_infer(served *s, const model_input *inputs, size_t n_inputs, model_output *outputs,
                       size_t n_outputs, served_infer_report *report, char *err, size_t err_len) {
    model_workspace *ws = workspace_get(s);
    ps_status st = PS_STATUS_OK;
    /* Table rows come over the network: read them before taking the lock, so updates
     * never wait on a read (without a workspace model_infer reads them under it). */
    if (ws && model_has_tables(s->m))
        st = model_infer_rows(s->m, ws, inputs, n_inputs, err, err_len);
    if (st == PS_STATUS_OK && atomic_load(&s->unsynced)) {
        /* a write's upload to the device failed: never compute on the stale mirror */
        pthread_rwlock_wrlock(&s->lock);
        st = served_params_sync(s, err, err_len);
        pthread_rwlock_unlock(&s->lock);
    }
    pthread_rwlock_rdlock(&s->lock);
    uint64_t pv = s->param_version;
    if (st == PS_STATUS_OK)
        st = model_infer(s->m, ws, inputs, n_inputs, outputs, n_outputs, err, err_len);
    bool bad = false;
    for (size_t i = 0; st == PS_STATUS_OK && i < n_outputs && !bad; i++) {
        uint64_t at = 0;
        bad = find_nonfinite(&outputs[i], &at);
        if (bad) {
            ps_set_err(err, err_len,
                       "model %s version %llu produced a non-finite value (%g) in output '%s' "
                       "at element %llu (parameter version %llu): its inputs or its parameters "
                       "overflow float32, so no answer is given",
                       s->name, (unsigned long long)s->version, (double)outputs[i].data[at],
                       outputs[i].name, (unsigned long long)at, (unsigned long long)pv);
            st = PS_STATUS_INTERNAL;
        }
    }
    pthread_rwlock_unlock(&s->lock);
    workspace_put(s, ws);
    bool was_bad = false;
    if (st == PS_STATUS_OK || bad)
        was_bad = atomic_exchange(&s->nonfinite, bad);
    else
        was_bad = atomic_load(&s->nonfinite);
    bool start = bad && !was_bad, end = st == PS_STATUS_OK && was_bad;
    if (start) { /* log a streak's start at most once per SERVED_NONFINITE_LOG_MS */
        int64_t now = ps_now_ms(), last = atomic_load(&s->nonfinite_logged_ms);
        start = (last == 0 || now - last >= SERVED_NONFINITE_LOG_MS) &&
                atomic_compare_exchange_strong(&s->nonfinite_logged_ms, &last, now);
        atomic_store(&s->nonfinite_logged, start);
    }
    if (end)
        end = atomic_exchange(&s->nonfinite_logged, false);
    if (report)
        *report =
            (served_infer_report){.param_version = pv, .streak_start = start, .streak_end = end};
    return st;
}

void served_stats_get(served *s, served_stats *ret_stats) {
    pthread_mutex_lock(&s->stats_lock);
    *ret_stats = s->stats;
    pthread_mutex_unlock(&s->stats_lock);
}

void served_stats_add(served *s, bool ok, uint64_t batch, uint64_t total_ns, uint64_t compute_ns) {
    pthread_mutex_lock(&s->stats_lock);
    if (ok) {
        s->stats.success++;
        s->stats.success_ns += total_ns;
        s->stats.inferences += batch;
        s->stats.executions++;
        s->stats.compute_ns += compute_ns;
        s->stats.last_inference_ms = (uint64_t)ps_wall_ms();
    } else {
        s->stats.fail++;
    }
    pthread_mutex_unlock(&s->stats_lock);
}
